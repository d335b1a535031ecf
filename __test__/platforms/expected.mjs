// What roundtrip.mjs must report in every runtime, for each platform binary: one
// definition for test:platforms and test:runtimes.

/**
 * @param {{ runtime: string, arch: string, platform: string, libc: 'glibc' | 'musl' }} where
 *   the runtime that ran it and the binary its loader must have picked by itself
 */
export function roundTripReport({ runtime, arch, platform, libc }) {
	return {
		runtime,
		arch,
		addon: `session-manager-redis.${platform}.node`,
		libc,
		sent: 1000,
		received: 1000,
		inOrder: true,
		hasBefore: true,
		closed: true,
		hasAfter: false,
		clientInfo: { name: 'roundtrip', version: '1.0.0' },
		capabilities: { roots: { listChanged: true } },
		logLevel: 'notice',
		subscriptionCreated: true,
		notification: 'notifications/tools/list_changed',
	};
}

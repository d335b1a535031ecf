'use strict';
// Loads the native addon for this platform through napi-rs's generated loader
// (native.cjs), and where no prebuilt binary fits, says which platform this is and
// which platforms have one.

/** The platforms with a prebuilt binary package (`npm/<platform>`). */
const PLATFORMS = Object.freeze([
	'linux-x64-gnu',
	'linux-arm64-gnu',
	'linux-x64-musl',
	'linux-arm64-musl',
	'darwin-arm64',
	'darwin-x64',
]);

/** e.g. `linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, `win32-x64`. */
function platformName() {
	if (process.platform !== 'linux') return `${process.platform}-${process.arch}`;
	let glibc = false;
	try {
		glibc = Boolean(/** @type {any} */ (process.report.getReport()).header.glibcVersionRuntime);
	} catch {
		// No report support: assume glibc, the common case.
		glibc = true;
	}
	return `linux-${process.arch}-${glibc ? 'gnu' : 'musl'}`;
}

function load() {
	try {
		return require('./native.cjs');
	} catch (error) {
		const here = platformName();
		const message = PLATFORMS.includes(here)
			? `@tmcp-rs/session-manager-redis: the binary package for this platform (${here}), ` +
				`@tmcp-rs/session-manager-redis-${here}, is not installed or could not be loaded. ` +
				'It is an optional dependency: reinstall without --no-optional / --omit=optional.'
			: `@tmcp-rs/session-manager-redis has no prebuilt binary for this platform (${here}). ` +
				`Prebuilt: ${PLATFORMS.join(', ')} (packages @tmcp-rs/session-manager-redis-<platform>).`;
		const err = new Error(message);
		err.cause = error;
		throw err;
	}
}

module.exports = load();

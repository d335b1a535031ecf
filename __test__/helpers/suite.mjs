// Per-file test setup shared by the spec files (vitest hooks; the other helpers are also
// used by the demo and the benchmark, outside vitest).
import { afterAll, afterEach, beforeAll } from 'vitest';
import { observer, testRedis } from './redis.mjs';

/**
 * A test file's server (see testRedis) and an observer on it, started before the file's
 * tests and stopped after them; `use(server, observer)` receives them once started.
 */
export function useTestRedis(use) {
	let server;
	let redis;
	beforeAll(async () => {
		server = await testRedis();
		redis = await observer(server.url);
		use(server, redis);
	});
	afterAll(async () => {
		await redis?.quit();
		await server?.stop();
	});
}

/**
 * Undo steps a test registers as it goes (`cleanups.push(() => …)`), run last-first after
 * each test, pass or fail.
 * @returns {(() => unknown)[]}
 */
export function useCleanups() {
	const cleanups = [];
	afterEach(async () => {
		while (cleanups.length) await cleanups.pop()();
	});
	return cleanups;
}

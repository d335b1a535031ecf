// Per-file test setup shared by the spec files (vitest hooks; the other helpers are also
// used by the demo and the benchmark, outside vitest).
import { afterAll, afterEach, beforeAll, onTestFailed } from 'vitest';
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

/**
 * A timeline for a long test: `step(name)` records when each step began, and the whole
 * timeline is printed if the test fails (a timeout says which step took the time).
 * Call inside the test.
 */
export function useSteps() {
	const start = Date.now();
	const steps = [];
	onTestFailed(() => console.log(`steps (ms since the test began): ${steps.map(([t, name]) => `${t} ${name}`).join(' | ')}`));
	return (/** @type {string} */ name) => steps.push([Date.now() - start, name]);
}

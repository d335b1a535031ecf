// Fails the test file if any promise rejection went unhandled while it ran.
import { afterAll, expect } from 'vitest';

export function failOnUnhandledRejections() {
	const unhandled = [];
	const onUnhandled = (reason) => unhandled.push(reason);
	process.on('unhandledRejection', onUnhandled);
	afterAll(() => {
		process.off('unhandledRejection', onUnhandled);
		expect(unhandled).toEqual([]);
	});
}

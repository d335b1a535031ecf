import { defineConfig } from 'vitest/config';

// `npm run test:platforms`: the prebuilt binaries of every platform (slow; not in `npm test`).
export default defineConfig({
	test: {
		include: ['__test__/platforms/**/*.spec.mjs'],
		testTimeout: 180_000,
		hookTimeout: 60_000,
		pool: 'forks',
		maxWorkers: 1,
	},
});

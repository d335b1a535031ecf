import { defineConfig } from 'vitest/config';

// `npm run test:runtimes`: the packed package under Node, Bun and Deno (not in `npm test`).
export default defineConfig({
	test: {
		include: ['__test__/runtimes/**/*.spec.mjs'],
		testTimeout: 120_000,
		hookTimeout: 60_000,
		pool: 'forks',
		maxWorkers: 1,
	},
});

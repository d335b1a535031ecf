import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
	test: {
		include: ['__test__/**/*.spec.mjs'],
		// The prebuilt binaries of every platform (`npm run test:platforms`) and the packed
		// package under Bun and Deno (`npm run test:runtimes`).
		exclude: [...configDefaults.exclude, '__test__/platforms/**', '__test__/runtimes/**'],
		testTimeout: 60_000,
		hookTimeout: 60_000,
		pool: 'forks',
		// Two cores: one file per core at a time.
		maxWorkers: 2,
	},
});

import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
	test: {
		include: ['__test__/**/*.spec.mjs'],
		// The prebuilt binaries of every platform: `npm run test:platforms`.
		exclude: [...configDefaults.exclude, '__test__/platforms/**'],
		testTimeout: 60_000,
		hookTimeout: 60_000,
		pool: 'forks',
		// Two cores: one file per core at a time.
		maxWorkers: 2,
	},
});

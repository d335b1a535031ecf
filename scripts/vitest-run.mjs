// Runs vitest with a JSON report and reads its counts: the one place the test commands
// (test.mjs, test-platforms.mjs, test-runtimes.mjs) turn a run into "N passed, N failed";
// and the frame of the two suites that test a prepared project (runPreparedSuite).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * @param {string[]} args vitest arguments after `run` (e.g. a --config)
 * @param {{ cwd: string, env?: NodeJS.ProcessEnv }} options
 * @returns {{ passed: number, failed: number }} failed also counts files that failed
 *   without a failing test (a setup error), and 1 when vitest failed with no report.
 */
export function runVitest(args, { cwd, env = process.env }) {
	const out = mkdtempSync(join(tmpdir(), 'vitest-json-'));
	const json = join(out, 'results.json');
	const vitest = spawnSync('npx', ['vitest', 'run', ...args, '--reporter=default', '--reporter=json', `--outputFile.json=${json}`], {
		cwd,
		stdio: 'inherit',
		env,
	});
	let passed = 0;
	let failed = 0;
	try {
		const results = JSON.parse(readFileSync(json, 'utf8'));
		passed = results.numPassedTests;
		const brokenFiles = results.testResults.filter(
			(file) => file.status === 'failed' && !file.assertionResults.some((t) => t.status === 'failed'),
		).length;
		failed = results.numFailedTests + brokenFiles;
	} catch {
		failed = 1;
	}
	if (vitest.status !== 0 && failed === 0) failed = 1;
	rmSync(out, { recursive: true, force: true });
	return { passed, failed };
}

/**
 * The frame of test:platforms and test:runtimes: `prepare(work)` sets up a project in a
 * fresh temporary folder and returns the config (written to JSON) that the suite's
 * vitest config reads from env `configEnv`; then the suite runs, the folder is removed
 * and one summary line printed. Exits the process: non-zero on any failure, a failed
 * preparation counting as one.
 * @param {{ name: string, vitestConfig: string, configEnv: string, cwd: string, prepare: (work: string) => object }} suite
 */
export function runPreparedSuite({ name, vitestConfig, configEnv, cwd, prepare }) {
	const started = Date.now();
	const work = mkdtempSync(join(tmpdir(), `tmcp-${name}-`));
	let passed = 0;
	let failed = 0;
	try {
		const config = join(work, 'config.json');
		writeFileSync(config, JSON.stringify(prepare(work), null, 2));
		({ passed, failed } = runVitest(['--config', vitestConfig], { cwd, env: { ...process.env, [configEnv]: config } }));
	} catch (error) {
		console.error(`test:${name}: ${error.message}`);
		failed += 1;
	} finally {
		rmSync(work, { recursive: true, force: true });
	}
	console.log(`test:${name} took ${((Date.now() - started) / 1000).toFixed(0)} s`);
	console.log(`${name}: ${passed} passed, ${failed} failed`);
	process.exit(failed > 0 ? 1 : 0);
}

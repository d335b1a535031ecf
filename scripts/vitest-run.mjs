// Runs vitest with a JSON report and reads its counts: the one place the test commands
// (test.mjs, test-platforms.mjs, test-runtimes.mjs) turn a run into "N passed, N failed".
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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

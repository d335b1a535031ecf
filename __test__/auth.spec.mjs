// ACL users: the minimal rule documented in the README works end to end; bad passwords
// reject clearly; passwords never show up in errors, warnings or util.inspect.
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisInfoSessionManager, RedisStreamSessionManager, RedisSubscriptionManager } from '../index.mjs';
import { eventually, observer, recorder, startRedis } from './helpers/redis.mjs';

/** Everything an error or warning shows: message, stack and util.inspect. */
const everything = (errors) => errors.map((e) => `${e.message}\n${e.stack}\n${inspect(e)}`).join('\n');

/**
 * TMCP_REDIS warnings emitted while `run` runs, up to a sentinel warning emitted after
 * it: warnings arrive in order, so once the sentinel arrived, so did the others.
 */
async function warningsDuring(run) {
	const warnings = [];
	const onWarning = (w) => (w.code === 'TMCP_REDIS' || w.code === 'TEST_SENTINEL') && warnings.push(w);
	process.on('warning', onWarning);
	try {
		await run();
		process.emitWarning('sentinel', { code: 'TEST_SENTINEL' });
		await eventually(() => warnings.some((w) => w.code === 'TEST_SENTINEL'), 5000, 'the sentinel warning');
	} finally {
		process.off('warning', onWarning);
	}
	return warnings.filter((w) => w.code === 'TMCP_REDIS');
}

const PASSWORD = 'Sup3r-s3cret-pw';
const READER_PASSWORD = 'R3ader-s3cret-pw';
// Keep in sync with the README ("Redis ACL").
const MINIMAL_RULE =
	'on >' +
	PASSWORD +
	' resetchannels ~available:session:* ~tmcp:* &session:* &delete:session:* &tmcp:broadcast &tmcp:subscriptions' +
	' -@all +hello +ping +select +get +set +del +exists +sadd +srem +smembers' +
	' +publish +subscribe +unsubscribe +eval';

let server;
let admin;
beforeAll(async () => {
	server = await startRedis({
		args: [
			...['--user', 'tmcp', ...MINIMAL_RULE.split(' ')],
			...['--user', 'admin', 'on', '>adminpw', '~*', '&*', '+@all'],
			// May read but not write: its writes get NOPERM.
			...['--user', 'reader', 'on', `>${READER_PASSWORD}`, 'resetchannels', '~*', '&*', '-@all', '+hello', '+ping', '+select', '+get', '+exists'],
			...['--user', 'default', 'off'],
		],
	});
	admin = await observer(`redis://admin:adminpw@127.0.0.1:${server.port}`);
});
afterAll(async () => {
	await admin?.quit();
	await server?.stop();
});

describe('an ACL user restricted to what the managers need', () => {
	it('runs every method end to end', async () => {
		const url = `redis://tmcp:${PASSWORD}@127.0.0.1:${server.port}/0`;
		const errors = [];
		const streams = new RedisStreamSessionManager(url, { onError: (e) => errors.push(e) });
		const info = new RedisInfoSessionManager(url, { onError: (e) => errors.push(e) });
		const rec = recorder();
		await streams.create('acl', rec);
		expect(await streams.has('acl')).toBe(true);
		await streams.send(['acl'], 'direct');
		await streams.send(undefined, 'broadcast');
		await eventually(() => rec.chunks.length === 2, 5000, 'deliveries');
		await info.setClientInfo('acl', { name: 'n', version: '1' });
		await info.setClientCapabilities('acl', {});
		await info.setLogLevel('acl', 'debug');
		await info.addSubscription('acl', 'file:///acl');
		await info.removeSubscription('acl', 'file:///acl');
		await info.addSubscription('acl', 'file:///acl');
		expect(await info.getClientInfo('acl')).toEqual({ name: 'n', version: '1' });
		expect(await info.getLogLevel('acl')).toBe('debug');
		expect(await info.getSubscriptions('file:///acl')).toEqual(['acl']);
		await info.delete('acl');
		expect(await info.getSubscriptions('file:///acl')).toEqual([]);
		await streams.delete('acl');
		expect(await streams.has('acl')).toBe(false);
		const subscriptions = new RedisSubscriptionManager(url, { onError: (e) => errors.push(e) });
		const received = [];
		const callbacks = { acknowledge() {}, send: (n) => void received.push(n), close() {} };
		expect(await subscriptions.create({ id: 1, origin: 'acl', filters: { toolsListChanged: true } }, callbacks)).toBe(true);
		await subscriptions.send({ jsonrpc: '2.0', method: 'notifications/tools/list_changed' });
		await eventually(() => received.length === 1, 5000, 'subscription delivery');
		await subscriptions.dispose();
		await streams.close();
		await info.close();
		expect(errors).toEqual([]);
		// Only the data epoch remains (see README, "Wire format"), and it expires by itself.
		expect(await admin.keys('*')).toEqual(['tmcp:epoch']);
		const ttl = await admin.ttl('tmcp:epoch');
		expect(ttl).toBeGreaterThan(0);
		expect(ttl).toBeLessThanOrEqual(30);
	});
});

describe('a wrong password', () => {
	it('rejects with a clear error that never contains the password', async () => {
		const wrong = 'Wr0ng-pa55word';
		const url = `redis://tmcp:${wrong}@127.0.0.1:${server.port}`;
		const errors = [];
		const info = new RedisInfoSessionManager(url, { commandTimeout: 2000, onError: (e) => errors.push(e) });
		const streams = new RedisStreamSessionManager(url, { commandTimeout: 2000, onError: (e) => errors.push(e) });
		const failures = await Promise.all([
			info.getClientInfo('x').catch((e) => e),
			streams.create('x', recorder()).catch((e) => e),
			info.setLogLevel('x', 'info').catch((e) => e),
		]);
		for (const error of failures) {
			expect(error).toBeInstanceOf(Error);
			expect(error.message).toMatch(/WRONGPASS|invalid username-password|auth/i);
		}
		await streams.close();
		await info.close();
		expect(errors.length).toBeGreaterThan(0);
		expect(everything([...failures, ...errors])).not.toContain(wrong);
		expect(inspect(info)).not.toContain(wrong);
		expect(inspect(streams)).not.toContain(wrong);
		expect(inspect(info)).toContain('tmcp:***@');
	});
});

describe('an ACL denial (NOPERM)', () => {
	it('rejects with Redis\'s NOPERM, reads go on, and the password shows nowhere', async () => {
		const url = `redis://reader:${READER_PASSWORD}@127.0.0.1:${server.port}`;
		const errors = [];
		const info = new RedisInfoSessionManager(url, { commandTimeout: 2000, onError: (e) => errors.push(e) });
		await admin.set('tmcp:client_info:r', JSON.stringify({ name: 'r', version: '1' }));
		expect(await info.getClientInfo('r')).toEqual({ name: 'r', version: '1' });
		const failures = await Promise.all([
			info.setClientInfo('r', { name: 'w', version: '2' }).catch((e) => e),
			info.setLogLevel('r', 'info').catch((e) => e),
		]);
		expect(failures[0].message).toMatch(/^Could not store client info for session r: .*NOPERM/);
		expect(failures[1].message).toMatch(/^Could not store log level for session r: .*NOPERM/);
		expect(errors.map((e) => e.message)).toEqual(failures.map((e) => e.message));
		await info.close();
		expect(everything([...failures, ...errors])).not.toContain(READER_PASSWORD);
		expect(inspect(info)).not.toContain(READER_PASSWORD);
		expect(inspect(info)).toContain('reader:***@');
	});
});

describe('warnings (no onError)', () => {
	it('background failures with a password in the URL (wrong password, NOPERM) are warned about without it', async () => {
		const wrong = 'Wr0ng-pa55word';
		const refused = new RedisInfoSessionManager(`redis://tmcp:${wrong}@127.0.0.1:${server.port}`, { commandTimeout: 2000 });
		const denied = new RedisInfoSessionManager(`redis://reader:${READER_PASSWORD}@127.0.0.1:${server.port}/0?pass=${READER_PASSWORD}`, {
			commandTimeout: 2000,
		});
		const warnings = await warningsDuring(async () => {
			// Setters whose promises the app dropped: their failures become warnings.
			await Promise.allSettled([refused.setLogLevel('x', 'info'), denied.setLogLevel('y', 'info')]);
		});
		await refused.close();
		await denied.close();
		// One warning per manager (each rate-limited on its own), saying what failed.
		expect(warnings.map((w) => w.message).sort()).toEqual([
			expect.stringMatching(/^Could not store log level for session x: .*(WRONGPASS|invalid username-password)/),
			expect.stringMatching(/^Could not store log level for session y: .*NOPERM/),
		]);
		expect(everything(warnings)).not.toContain(wrong);
		expect(everything(warnings)).not.toContain(READER_PASSWORD);
	});
});

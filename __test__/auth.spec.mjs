// ACL users: the minimal rule documented in the README works end to end; bad passwords
// reject clearly; passwords never show up in errors, warnings or util.inspect.
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisInfoSessionManager, RedisStreamSessionManager, RedisSubscriptionManager } from '../index.mjs';
import { eventually, observer, recorder, startRedis } from './helpers/redis.mjs';

const PASSWORD = 'Sup3r-s3cret-pw';
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
		const everything = [...failures, ...errors].map((e) => `${e.message}\n${e.stack}\n${inspect(e)}`).join('\n');
		expect(everything).not.toContain(wrong);
		expect(inspect(info)).not.toContain(wrong);
		expect(inspect(streams)).not.toContain(wrong);
		expect(inspect(info)).toContain('tmcp:***@');
	});
});

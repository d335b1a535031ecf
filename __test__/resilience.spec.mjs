// Failure cases of the one-stack design (issue 11): each test failed on the design where
// Node owned the sockets (3430272). Real redis-server processes on free loopback ports.
import net from 'node:net';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { createSessionManagers, RedisInfoSessionManager, RedisStreamSessionManager } from '../index.mjs';
import { useCleanups } from './helpers/suite.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';
import { eventually, freePort, observer, recorder, startRedis } from './helpers/redis.mjs';

const cleanups = useCleanups();

failOnUnhandledRejections();

/** A redis-server of this test and a plain client on it, both ended after the test. */
async function serverWithObserver(options) {
	const server = await startRedis(options);
	cleanups.push(() => server.stop());
	const redis = await observer(server.url);
	cleanups.push(() => redis.quit());
	return { server, redis };
}

/**
 * A TCP relay to Redis that can go silent: `silence()` stops forwarding on every
 * connection open at that moment (sockets stay open, bytes are swallowed), like a
 * proxy that hangs. Connections opened afterwards are relayed normally.
 */
async function silentProxy(targetPort) {
	const port = await freePort();
	const pairs = new Set();
	const server = net.createServer((client) => {
		const upstream = net.connect(targetPort, '127.0.0.1');
		const pair = { client, upstream, silent: false };
		pairs.add(pair);
		client.on('data', (d) => pair.silent || upstream.write(d));
		upstream.on('data', (d) => pair.silent || client.write(d));
		const end = () => {
			pairs.delete(pair);
			client.destroy();
			upstream.destroy();
		};
		client.on('error', end).on('close', end);
		upstream.on('error', end).on('close', end);
	});
	await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
	return {
		url: `redis://127.0.0.1:${port}`,
		silence() {
			for (const pair of pairs) pair.silent = true;
		},
		close() {
			for (const pair of pairs) {
				pair.client.destroy();
				pair.upstream.destroy();
			}
			return new Promise((resolve) => server.close(resolve));
		},
	};
}

describe('a session deleted elsewhere while the pub/sub connection was down', () => {
	it('stays deleted: the owner closes its stream and has() stays false', async () => {
		const { server, redis } = await serverWithObserver();
		const errors = [];
		const owner = new RedisStreamSessionManager(server.url, { onError: (e) => errors.push(e.message) });
		const other = new RedisStreamSessionManager(server.url);
		cleanups.push(() => owner.close(), () => other.close());
		const gone = recorder();
		const kept = recorder();
		await owner.create('X', gone);
		await owner.create('Y', kept);

		// The delete message is published while the owner has no subscription.
		await redis.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub']);
		await other.delete('X');

		await eventually(() => errors.some((m) => /lost the Redis pub\/sub connection/.test(m)), 5000, 'loss reported');
		await eventually(async () => (await redis.pubSubNumSub(['session:Y']))['session:Y'] === 1, 5000, 'Y resubscribed');
		await eventually(() => gone.closed, 10_000, 'the stream of X closed by its owner');
		expect(await other.has('X')).toBe(false);
		expect(await redis.exists('available:session:X')).toBe(0);
		expect((await redis.pubSubNumSub(['session:X']))['session:X']).toBe(0);
		// Y was not deleted: still live and receiving.
		expect(kept.closed).toBe(false);
		await other.send(['Y'], 'still here');
		await eventually(() => kept.chunks.includes('still here'), 5000, 'delivery to Y');
		expect(await other.has('Y')).toBe(true);
	});
});

describe('a command connection whose peer goes silent', () => {
	it('is replaced: calls fail with a timeout, then work again on a new connection', async () => {
		const { server } = await serverWithObserver();
		const proxy = await silentProxy(server.port);
		cleanups.push(() => proxy.close());
		const info = new RedisInfoSessionManager(proxy.url, { commandTimeout: 500 });
		cleanups.push(() => info.close());
		await info.setClientInfo('p', { name: 'before', version: '1' });

		proxy.silence();
		const error = await info.getClientInfo('p').catch((e) => e);
		expect(error.message).toMatch(/did not answer within 500 ms \(commandTimeout\)/);
		await eventually(
			() => info.getClientInfo('p').then(() => true, () => false),
			15_000,
			'a call answered over a new connection',
		);
		expect(await info.getClientInfo('p')).toEqual({ name: 'before', version: '1' });
	});
});

describe('a Redis that stops reading (SIGSTOP)', () => {
	it('bounds queued data: calls beyond the limit reject at once as not sent', async () => {
		const { server } = await serverWithObserver();
		cleanups.push(() => server.signal('SIGCONT'));
		const info = new RedisInfoSessionManager(server.url, { commandTimeout: 3000 });
		cleanups.push(() => info.close());
		await info.setClientInfo('warm', { name: 'w', version: '1' });
		server.signal('SIGSTOP');

		// 100 values of 1 MiB: more than the 64 MiB a connection may hold queued.
		const value = { name: 'x'.repeat(1 << 20), version: '1' };
		const outcomes = await Promise.all(
			Array.from({ length: 100 }, (_, i) => info.setClientInfo(`big${i}`, value).then(() => 'ok', (e) => e.message)),
		);
		const refused = outcomes.filter((m) => /more than 64 MiB of calls are waiting for Redis; the command was not sent/.test(m));
		const timedOut = outcomes.filter((m) => /did not answer within 3000 ms \(commandTimeout\); the command (may still have run|was not sent)/.test(m));
		expect(refused.length).toBeGreaterThanOrEqual(30);
		expect(refused.length + timedOut.length).toBe(100);
		server.signal('SIGCONT');
		await eventually(() => info.getClientInfo('warm').then(() => true, () => false), 10_000, 'recovered');
	});

	it('timed-out sends say whether they may still run, and a call never sent is never delivered', async () => {
		const { server } = await serverWithObserver();
		cleanups.push(() => server.signal('SIGCONT'));
		const options = { commandTimeout: 800 };
		const receiver = new RedisStreamSessionManager(server.url);
		const sender = new RedisStreamSessionManager(server.url, options);
		cleanups.push(() => receiver.close(), () => sender.close());
		const rec = recorder();
		await receiver.create('chaos', rec);
		await sender.has('chaos');

		server.signal('SIGSTOP');
		const results = await Promise.all(
			Array.from({ length: 32 }, (_, i) => sender.send(['chaos'], `m${i}`).then(() => 'ok', (e) => e.message)),
		);
		server.signal('SIGCONT');
		for (const message of results) {
			expect(message).toMatch(/did not answer within 800 ms \(commandTimeout\); the command (may still have run|was not sent)/);
		}
		await sender.send(['chaos'], 'marker');
		await eventually(() => rec.chunks.includes('marker'), 10_000, 'delivery after SIGCONT');
		for (let i = 0; i < 32; i++) {
			if (/was not sent/.test(results[i])) expect(rec.chunks).not.toContain(`m${i}`);
		}
	});
});

describe('managers sharing one connection', () => {
	it('a closed one rejects clearly while its sibling keeps working', async () => {
		const { server } = await serverWithObserver();
		const { streams, info } = createSessionManagers(server.url);
		cleanups.push(() => info.close());
		const rec = recorder();
		await streams.create('s1', rec);
		await streams.close();
		await expect(streams.send(['s1'], 'x')).rejects.toThrow(/closed/);
		await expect(streams.create('s2', recorder())).rejects.toThrow(/Cannot create: the session manager is closed/);
		await info.setClientInfo('s1', { name: 'n', version: '1' });
		expect(await info.getClientInfo('s1')).toEqual({ name: 'n', version: '1' });
	});

	it('closing the info manager leaves the stream manager working', async () => {
		const { server } = await serverWithObserver();
		const { streams, info } = createSessionManagers(server.url);
		cleanups.push(() => streams.close());
		await info.close();
		await expect(info.getClientInfo('a')).rejects.toThrow(/closed/);
		const rec = recorder();
		await streams.create('s3', rec);
		await streams.send(['s3'], 'hello');
		await eventually(() => rec.chunks.includes('hello'), 5000, 'delivery');
	});
});

describe('glob characters in keyPrefix', () => {
	it('are escaped in SCAN patterns: an upstream-compatible delete touches only its own prefix', async () => {
		const { server, redis } = await serverWithObserver();
		const starred = new RedisInfoSessionManager(server.url, { keyPrefix: 'app*:', upstreamCompatible: true });
		const other = new RedisInfoSessionManager(server.url, { keyPrefix: 'appX:' });
		cleanups.push(() => starred.close(), () => other.close());
		await other.addSubscription('s', 'file:///r');
		await redis.sAdd('app*:tmcp:subscriptions:file:///r', 's');
		await starred.delete('s');
		expect(await redis.sMembers('app*:tmcp:subscriptions:file:///r')).toEqual([]);
		expect(await other.getSubscriptions('file:///r')).toEqual(['s']);
	});
});

describe('secrets and TLS in URLs', () => {
	it('util.inspect masks a password given as a query parameter', () => {
		const streams = new RedisStreamSessionManager('redis+unix:///tmp/x.sock?db=1&pass=hunter2');
		cleanups.push(() => streams.close());
		const shown = inspect(streams);
		expect(shown).not.toContain('hunter2');
		expect(shown).toContain('db=1');
	});

	it('a #insecure fragment is refused instead of turning certificate checks off', () => {
		expect(() => new RedisInfoSessionManager('rediss://127.0.0.1:6380/#insecure')).toThrow(TypeError);
		expect(() => new RedisInfoSessionManager('rediss://127.0.0.1:6380/#insecure')).toThrow(
			/certificate verification cannot be turned off/,
		);
	});
});

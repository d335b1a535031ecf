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
	it('stays deleted when it was created after the data epoch expired while the owner was idle', async () => {
		// The owner learnt the epoch with its first session; idle longer than the epoch's
		// TTL, it comes back with a new one. A session created then, deleted before its
		// first refresh while the delete message was missed, is still a delete: its key
		// was written under the new epoch, which did not change since.
		const { server, redis } = await serverWithObserver();
		const errors = [];
		// A long TTL: no periodic refresh within the test, only the one after the restore.
		const owner = new RedisStreamSessionManager(server.url, { onError: (e) => errors.push(e.message), sessionTtlSeconds: 60 });
		const other = new RedisStreamSessionManager(server.url);
		cleanups.push(() => owner.close(), () => other.close());
		const first = recorder();
		await owner.create('A', first);
		await other.delete('A');
		await eventually(() => first.closed, 5000, 'the stream of A closed');
		const before = await redis.get('tmcp:epoch');
		expect(before).toBeTruthy();
		// As if it expired while no session lived anywhere.
		await redis.del('tmcp:epoch');

		const gone = recorder();
		const kept = recorder();
		await owner.create('X', gone);
		await owner.create('Y', kept);
		expect(await redis.get('tmcp:epoch')).not.toBe(before);
		// Deleted with its message missed for sure: the key alone, then the pub/sub
		// connection lost (its restore looks for missing keys).
		await redis.del('available:session:X');
		await redis.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub']);

		await eventually(() => errors.some((m) => /lost the Redis pub\/sub connection/.test(m)), 5000, 'loss reported');
		await eventually(async () => (await redis.pubSubNumSub(['session:Y']))['session:Y'] === 1, 5000, 'Y resubscribed');
		await eventually(() => gone.closed || redis.exists('available:session:X').then((n) => n === 1), 10_000, 'X closed or written again');
		expect(await redis.exists('available:session:X')).toBe(0);
		await eventually(() => gone.closed, 10_000, 'the stream of X closed by its owner');
		expect(await other.has('X')).toBe(false);
		expect(kept.closed).toBe(false);
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
	it('bounds queued data: calls beyond 64 MiB reject at once as not sent, memory stays bounded, refused writes never land', async () => {
		const { server, redis } = await serverWithObserver();
		cleanups.push(() => server.signal('SIGCONT'));
		const commandTimeout = 1000;
		const { streams, info } = createSessionManagers(server.url, { commandTimeout });
		cleanups.push(() => streams.close(), () => info.close());
		await info.setClientInfo('warm', { name: 'w', version: '1' });
		server.signal('SIGSTOP');

		// 100 values of 1 MiB in one tick: more than the 64 MiB a connection may hold queued.
		const value = { name: 'x'.repeat(1 << 20), version: '1' };
		const outcomes = await Promise.all(
			Array.from({ length: 100 }, (_, i) => info.setClientInfo(`big${i}`, value).then(() => 'ok', (e) => e.message)),
		);
		const refused = outcomes.filter((m) => /more than 64 MiB of calls are waiting for Redis; the command was not sent/.test(m));
		const timedOut = outcomes.filter((m) => /did not answer within 1000 ms \(commandTimeout\); the command (may still have run|was not sent)/.test(m));
		// Anything else shows as itself (a count alone would hide what came back).
		expect(outcomes.filter((m) => !refused.includes(m) && !timedOut.includes(m))).toEqual([]);
		expect(refused.length, `${refused.length} refused, ${timedOut.length} timed out`).toBeGreaterThanOrEqual(30);
		expect(refused.length + timedOut.length).toBe(100);

		// The app keeps writing while Redis reads nothing: 1 MiB sends (one string, so the
		// app itself holds nothing per call), 8 per tick, at least 4 GiB and four command
		// timeouts (queued calls time out and make room for more). Memory is sampled as
		// it goes: whatever waits for Redis is bounded, so the process grows by a small
		// multiple of the 64 MiB bound (measured: about 300 MB at the peak), never by
		// what was written.
		const big = 'y'.repeat(1 << 20);
		const baseline = process.memoryUsage();
		let peakRss = baseline.rss;
		let peakExternal = baseline.external;
		let written = 0;
		const counts = { refused: 0, timedOut: 0, other: [] };
		const sends = [];
		const began = Date.now();
		while (written < 4096 || Date.now() - began < 4 * commandTimeout) {
			for (let k = 0; k < 8; k++, written++) {
				sends.push(
					streams.send(['nobody'], big).then(
						() => counts.other.push('resolved'),
						(e) => {
							if (/more than 64 MiB of calls are waiting for Redis; the command was not sent/.test(e.message)) counts.refused++;
							else if (/did not answer within 1000 ms \(commandTimeout\)/.test(e.message)) counts.timedOut++;
							else counts.other.push(e.message);
						},
					),
				);
			}
			await new Promise((r) => setImmediate(r));
			const now = process.memoryUsage();
			peakRss = Math.max(peakRss, now.rss);
			peakExternal = Math.max(peakExternal, now.external);
			// A send settles within its timeout: keep only what is still pending.
			if (sends.length > 4096) await Promise.all(sends.splice(0, sends.length - 1024));
		}
		await Promise.all(sends);
		const MiB = 1 << 20;
		expect(counts.other).toEqual([]);
		expect(counts.refused).toBeGreaterThan(written / 4);
		expect(counts.refused + counts.timedOut).toBe(written);
		expect((peakRss - baseline.rss) / MiB, `peak RSS growth (MiB) after writing ${written} MiB`).toBeLessThan(512);
		expect((peakExternal - baseline.external) / MiB, 'peak external growth (MiB)').toBeLessThan(64);

		server.signal('SIGCONT');
		await eventually(() => info.getClientInfo('warm').then(() => true, () => false), 10_000, 'recovered');
		// A write after the others on the same connection: once it is answered, Redis has
		// run everything written before it.
		await info.setClientInfo('after', { name: 'a', version: '1' });
		const notSent = outcomes.flatMap((m, i) => (/the command was not sent/.test(m) ? [`tmcp:client_info:big${i}`] : []));
		expect(notSent.length).toBe(refused.length + timedOut.filter((m) => /was not sent/.test(m)).length);
		const landed = [];
		for (const key of notSent) if (await redis.exists(key)) landed.push(key);
		expect(landed).toEqual([]);
	});

	it('timed-out sends say whether they may still run, and a call never sent is never delivered', async () => {
		const { server, redis } = await serverWithObserver();
		cleanups.push(() => server.signal('SIGCONT'));
		const options = { commandTimeout: 800 };
		const receiver = new RedisStreamSessionManager(server.url);
		const sender = new RedisStreamSessionManager(server.url, options);
		cleanups.push(() => receiver.close(), () => sender.close());
		const rec = recorder();
		await receiver.create('chaos', rec);
		await sender.has('chaos');
		const publishes = async () => Number(/cmdstat_publish:calls=(\d+)/.exec(await redis.info('commandstats'))?.[1] ?? 0);
		const publishedBefore = await publishes();

		server.signal('SIGSTOP');
		// More calls in one tick than the connection is handed at once (64 pipelines of 32
		// calls): the rest wait in the queue behind pipelines Redis never answers, and
		// their deadline passes there, so they are never handed over.
		const total = 5000;
		const results = await Promise.all(
			Array.from({ length: total }, (_, i) => sender.send(['chaos'], `m${i}`).then(() => 'ok', (e) => e.message)),
		);
		server.signal('SIGCONT');
		for (const message of results) {
			expect(message).toMatch(/did not answer within 800 ms \(commandTimeout\); the command (may still have run|was not sent)/);
		}
		const notSent = results.flatMap((m, i) => (/was not sent/.test(m) ? [`m${i}`] : []));
		const mayHaveRun = total - notSent.length;
		expect(notSent.length).toBeGreaterThanOrEqual(1000);

		// The marker is published after everything written before it, and Redis delivers a
		// connection's messages in order: once it arrived, every earlier one that ran did.
		await sender.send(['chaos'], 'marker');
		await eventually(() => rec.chunks.includes('marker'), 10_000, 'delivery after SIGCONT');
		const arrived = new Set(rec.chunks);
		expect(notSent.filter((m) => arrived.has(m))).toEqual([]);
		expect(rec.chunks.length, 'each message at most once').toBe(arrived.size);
		// And at Redis itself: no PUBLISH ran beyond those that may have run and the marker.
		expect((await publishes()) - publishedBefore).toBeLessThanOrEqual(mayHaveRun + 1);
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

// Redis Sentinel: the master is found through the sentinels and followed across a
// failover (SENTINEL FAILOVER, a master killed with SIGKILL, a frozen master heard of by
// +switch-master, also after the listened-to sentinel froze) and after a timeout alone;
// sentinels that require credentials. Against private sets of real redis-server
// processes (master, replica, three sentinels) on free ports.
import { inspect } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisInfoSessionManager, RedisStreamSessionManager } from '../index.mjs';
import { deliveryResumes, eventually, observer, recorder, until } from './helpers/redis.mjs';
import { roundTrip } from './helpers/roundtrip.mjs';
import {
	MASTER_NAME,
	currentMasterPort,
	sentinelClient,
	startSentinelSet,
	subscribedClients,
} from './helpers/sentinel.mjs';
import { useCleanups, useSteps } from './helpers/suite.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';

failOnUnhandledRejections();
const cleanups = useCleanups();

let set;
beforeAll(async () => {
	set = await startSentinelSet();
});
afterAll(() => set?.stop());

const url = `redis://${MASTER_NAME}`;
const options = (of = set) => ({ sentinel: { nodes: of.nodes }, commandTimeout: 2000, connectTimeout: 1000 });

function managers(extra = {}, of = set) {
	const errors = [];
	const all = { ...options(of), ...extra, onError: (e) => errors.push(e.message) };
	const streams = new RedisStreamSessionManager(url, all);
	const info = new RedisInfoSessionManager(url, all);
	cleanups.push(() => streams.close(), () => info.close());
	return { streams, info, errors };
}

/** Every sentinel names the same master, and it answers ROLE as a master. */
async function sentinelsAgree(of) {
	const ports = await Promise.all(of.sentinels.map((s) => currentMasterPort(s.port).catch(() => undefined)));
	if (ports[0] === undefined || !ports.every((p) => p === ports[0])) return false;
	const node = await sentinelClient(ports[0]).catch(() => undefined);
	if (!node) return false;
	try {
		const [role] = await node.sendCommand(['ROLE']);
		return role === 'master';
	} catch {
		return false;
	} finally {
		node.destroy();
	}
}

describe('Sentinel', () => {
	it('finds the master through the sentinels and runs every method', async () => {
		const step = useSteps();
		const { streams, info } = managers();
		const rec = recorder();
		step('create');
		await streams.create('s1', rec);
		step('send');
		await streams.send(['s1'], 'hello');
		await eventually(() => rec.chunks.includes('hello'), 5000, 'delivery');
		step('has');
		expect(await streams.has('s1')).toBe(true);
		step('info');
		await info.setClientInfo('s1', { name: 'n', version: '1' });
		expect(await info.getClientInfo('s1')).toEqual({ name: 'n', version: '1' });
	});

	it.each([
		['a SENTINEL FAILOVER', (s) => s.failover()],
		['the master killed (SIGKILL)', async (s) => {
			const port = await currentMasterPort(s.sentinels[0].port);
			const victim = [s.master, s.replica].find((n) => n.port === port);
			await victim.stop('SIGKILL');
		}],
	])('follows %s: commands and subscriptions move to the new master', async (_name, failover) => {
		const step = useSteps();
		const { streams, info } = managers();
		const rec = recorder();
		step('create');
		await streams.create('f1', rec);
		await info.setClientInfo('f1', { name: 'before', version: '1' });
		const before = await currentMasterPort(set.sentinels[0].port);

		step('failover');
		await failover(set);
		step('promotion');
		await eventually(async () => (await currentMasterPort(set.sentinels[0].port)) !== before, 20_000, 'the sentinels to promote the replica');

		// Writes reach the new master (a replica would answer READONLY), the stream's
		// subscription is restored, and its session is still live.
		step('write after');
		await until(() => info.setClientInfo('f1', { name: 'after', version: '2' }), 'a write after the failover');
		expect(await info.getClientInfo('f1')).toEqual({ name: 'after', version: '2' });
		step('delivery after');
		await deliveryResumes(streams, rec, 'f1', 'after failover');
		// Re-asserted on the new master (a write the old one had not yet replicated is lost
		// with it; the liveness check after following the new master writes it again).
		step('liveness key');
		await eventually(() => streams.has('f1'), 10_000, 'the liveness key on the new master');
		// A new session works on the new master too.
		const rec2 = recorder();
		step('create after');
		await until(() => streams.create('f2', rec2), 'a create after the failover');
		await streams.send(['f2'], 'fresh');
		await eventually(() => rec2.chunks.includes('fresh'), 5000, 'delivery to a new session');
	});

	it('a wrong master name rejects with a clear error instead of hanging', async () => {
		const info = new RedisInfoSessionManager('redis://no-such-master', { ...options(), commandTimeout: 1500 });
		cleanups.push(() => info.close());
		const error = await info.getClientInfo('x').catch((e) => e);
		expect(error).toBeInstanceOf(Error);
		expect(error.message).toMatch(/Could not read session info for session x: .*(master|sentinel)/i);
	});

	it('bad sentinel options are a clear TypeError at construction', () => {
		expect(() => new RedisInfoSessionManager(url, { sentinel: { nodes: [] } })).toThrow(/sentinel.nodes/);
		expect(() => new RedisInfoSessionManager(url, { sentinel: { nodes: ['no-port'] } })).toThrow(/host:port/);
		expect(() => new RedisInfoSessionManager(url, { sentinel: { nodes: set.nodes, extra: 1 } })).toThrow(/sentinel.extra/);
		expect(() => new RedisInfoSessionManager('redis+unix:///tmp/x.sock', { sentinel: { nodes: set.nodes } })).toThrow(TypeError);
	});

	// One form everywhere (as cluster.nodes): each works alone, so each is really used.
	it.each([
		['"host:port" strings', (s) => `127.0.0.1:${s.port}`],
		['redis:// URLs', (s) => `redis://127.0.0.1:${s.port}`],
		['{ host, port } objects', (s) => ({ host: '127.0.0.1', port: s.port })],
	])('sentinel.nodes as %s finds the master', async (_form, node) => {
		// The failover tests above may leave the sentinels still reconfiguring (redis-rs
		// then finds no sentinel naming a master that answers as one: seen once in CI):
		// as in a deployment between faults, every sentinel names one master, a master.
		await eventually(() => sentinelsAgree(set), 20_000, 'the sentinels to agree on a master');
		const nodes = set.sentinels.map(node);
		expect(await roundTrip(url, { sentinel: { nodes }, commandTimeout: 2000 })).toEqual({ name: url, version: '1' });
	});

	it.each([
		[[26379], /must hold "host:port" strings, redis:\/\/ or rediss:\/\/ URLs or \{ host, port \} objects, got 26379/],
		[[null], /sentinel.nodes" must hold .* got null/],
		[['127.0.0.1'], /sentinel.nodes" must hold .* got "127.0.0.1"/],
		[['http://127.0.0.1:26379'], /sentinel.nodes" must hold .* got "http:\/\/127.0.0.1:26379"/],
		[[{ host: '127.0.0.1' }], /"sentinel.nodes\[0\].port" must be an integer from 1 to 65535, got undefined/],
		[[{ host: '127.0.0.1', port: 70000 }], /"sentinel.nodes\[0\].port" must be an integer from 1 to 65535, got 70000/],
		[[{ host: '127.0.0.1', port: '26379' }], /"sentinel.nodes\[0\].port" must be an integer from 1 to 65535, got "26379"/],
		[[{ host: '', port: 26379 }], /"sentinel.nodes\[0\].host" must be a host name or IP address, got ""/],
		[[{ host: '127.0.0.1', port: 26379, password: 'x' }], /Unknown option "sentinel.nodes\[0\].password" \(known: host, port\): a node's own credentials or TLS go in a redis:\/\/ or rediss:\/\/ URL/],
		[['redis://127.0.0.1'], /sentinel.nodes": a sentinel's URL must name its port/],
		[['redis://127.0.0.1:26379/1'], /sentinel.nodes": a sentinel has no database/],
		[['redis+unix:///tmp/s.sock'], /sentinel.nodes" must hold/],
		[['rediss://127.0.0.1:26379/#insecure'], /sentinel.nodes": .*certificate verification cannot be turned off/],
	])('sentinel.nodes %j is a TypeError at construction', (nodes, message) => {
		for (const Manager of [RedisInfoSessionManager, RedisStreamSessionManager]) {
			const error = (() => {
				try {
					new Manager(url, { sentinel: { nodes } });
				} catch (e) {
					return e;
				}
			})();
			expect(error).toBeInstanceOf(TypeError);
			expect(error.code).toBe('TMCP_REDIS_BAD_ARGUMENT');
			expect(error.message).toMatch(message);
		}
	});

	it('a redis:// sentinel URL with sentinel.tls: true is a TypeError (plain text or TLS: not both)', () => {
		expect(() => new RedisInfoSessionManager(url, { sentinel: { nodes: ['redis://127.0.0.1:26379'], tls: true } })).toThrow(
			/sentinel.nodes" has a redis:\/\/ URL, but "sentinel.tls" is true: use rediss:\/\//,
		);
	});

	it('a refused node never shows its password (sentinel.nodes and cluster.nodes)', () => {
		const secret = 'Hunter2-s3cret';
		const cases = [
			[url, { sentinel: { nodes: [`http://user:${secret}@127.0.0.1:26379`] } }],
			[url, { sentinel: { nodes: [`user:${secret}@127.0.0.1:26379`] } }],
			[url, { sentinel: { nodes: [`redis://user:${secret}@127.0.0.1`] } }],
			[url, { sentinel: { nodes: [`redis://user:${secret}@127.0.0.1:26379/2`] } }],
			[url, { sentinel: { nodes: [`redis://user:${secret}@127.0.0.1:26379`], tls: true } }],
			[url, { sentinel: { nodes: [`rediss://user:${secret}@127.0.0.1:26379/#insecure`] } }],
			[url, { sentinel: { nodes: [{ host: `user:${secret}@127.0.0.1`, port: 26379 }] } }],
			['redis://127.0.0.1:1', { cluster: { nodes: [`http://user:${secret}@127.0.0.1:7000`] } }],
			['redis://127.0.0.1:1', { cluster: { nodes: [`user:${secret}@127.0.0.1:7000`] } }],
			['redis://127.0.0.1:1', { cluster: { nodes: [`redis://user:${secret}@127.0.0.1:7000/#insecure`] } }],
		];
		for (const [at, options] of cases) {
			let error;
			try {
				cleanups.push(((m) => () => m.close())(new RedisInfoSessionManager(at, options)));
			} catch (e) {
				error = e;
			}
			const shown = JSON.stringify(options);
			expect(error, shown).toBeInstanceOf(TypeError);
			expect(error.message, shown).toMatch(/(sentinel|cluster)\.nodes/);
			expect(`${error.message}\n${error.stack}\n${inspect(error)}`, shown).not.toContain(secret);
		}
	});
	// Its own set: the failover tests above leave no replica to promote.
	it('hears +switch-master: an idle stream follows a failover away from a frozen master', async () => {
		// A long TTL: the liveness check (which would notice the frozen master by its
		// timeouts) does not run during the test, so only +switch-master can move the
		// stream's subscription.
		const own = await startSentinelSet();
		cleanups.push(() => own.stop());
		const { streams } = managers({ sessionTtlSeconds: 600 }, own);
		const rec = recorder();
		await streams.create('w1', rec);
		cleanups.push(await own.freezeMaster());

		const sender = managers({}, own);
		await deliveryResumes(sender.streams, rec, 'w1', 'via the new master', 15_000);
	});

	// Its own set: a sentinel and then the master are frozen.
	it('moves to the next sentinel when the one it listens on stops answering, and still hears +switch-master', async () => {
		const own = await startSentinelSet();
		cleanups.push(() => own.stop());
		// A stream manager alone (one listener), idle, with the liveness check out of the
		// window: only the +switch-master listener can move its subscription. (What it
		// reports about the frozen master is not what this test checks.)
		const streams = new RedisStreamSessionManager(url, { ...options(own), sessionTtlSeconds: 600, onError: () => {} });
		cleanups.push(() => streams.close());
		const rec = recorder();
		await streams.create('n1', rec);
		const listening = async () => Promise.all(own.sentinels.map((s) => subscribedClients(s.port)));
		await eventually(async () => (await listening()).reduce((a, b) => a + b) === 1, 10_000, 'the listener on one sentinel');
		const stopped = own.sentinels[(await listening()).indexOf(1)];
		const others = own.sentinels.filter((s) => s !== stopped);

		stopped.signal('SIGSTOP');
		cleanups.push(() => stopped.signal('SIGCONT'));
		// It finds out by a PING unanswered after a quiet while (15 s + 2 s here).
		await eventually(async () => {
			const counts = await Promise.all(others.map((s) => subscribedClients(s.port)));
			return counts.reduce((a, b) => a + b) === 1;
		}, 30_000, 'the listener on another sentinel');

		// The two answering sentinels still make a majority: they fail the master over.
		cleanups.push(await own.freezeMaster(others[0].port));
		const sender = new RedisStreamSessionManager(url, { sentinel: { nodes: others.map((s) => `127.0.0.1:${s.port}`) }, commandTimeout: 2000 });
		cleanups.push(() => sender.close());
		await deliveryResumes(sender, rec, 'n1', 'via the new master', 15_000);
		expect(rec.closed).toBe(false);
	}, 90_000);

	it('a call that times out makes the manager ask the sentinels again (no +switch-master)', async () => {
		const own = await startSentinelSet();
		cleanups.push(() => own.stop());
		const { streams, info } = managers({ commandTimeout: 1000, sessionTtlSeconds: 600 }, own);
		const rec = recorder();
		await streams.create('t1', rec);
		await info.setClientInfo('t1', { name: 'before', version: '1' });
		const sentinels = await Promise.all(own.sentinels.map((s) => sentinelClient(s.port)));
		cleanups.push(() => sentinels.forEach((c) => c.destroy()));
		const published = [];
		const watcher = await sentinelClient(own.sentinels[0].port);
		cleanups.push(() => watcher.destroy());
		await watcher.subscribe('+switch-master', (m) => published.push(m));

		// The sentinels are pointed at the replica (made a master) without a failover, so
		// no +switch-master is published; the old master is frozen, so calls to it only
		// time out (no refusal, no READONLY).
		const replica = await observer(own.replica.url);
		cleanups.push(() => replica.quit());
		await replica.sendCommand(['REPLICAOF', 'NO', 'ONE']);
		for (const c of sentinels) {
			await c.sendCommand(['SENTINEL', 'REMOVE', MASTER_NAME]);
			await c.sendCommand(['SENTINEL', 'MONITOR', MASTER_NAME, '127.0.0.1', String(own.replica.port), '2']);
		}
		for (const s of own.sentinels) expect(await currentMasterPort(s.port)).toBe(own.replica.port);
		own.master.signal('SIGSTOP');
		cleanups.push(() => own.master.signal('SIGCONT'));

		const first = await info.setClientInfo('t1', { name: 'after', version: '2' }).catch((e) => e);
		if (first instanceof Error) expect(first.message).toMatch(/did not answer within 1000 ms \(commandTimeout\)/);
		await until(() => info.setClientInfo('t1', { name: 'after', version: '2' }), 'a write after the timeout', 15_000);
		expect(JSON.parse(await replica.get('tmcp:client_info:t1'))).toEqual({ name: 'after', version: '2' });
		// The stream manager's own calls time out too, and both its connections follow.
		await deliveryResumes(streams, rec, 't1', 'on the new master', 15_000);
		expect(await replica.exists('available:session:t1')).toBe(1);
		expect(published).toEqual([]);
	});

	it.each([
		['an ACL user (sentinel.username + sentinel.password)', { username: 'sentineluser', password: 'S3ntinel-pw' }],
		['requirepass (sentinel.password)', { password: 'S3ntinel-pw' }],
	])('sentinels that require a password: %s', async (_name, auth) => {
		const own = await startSentinelSet({ auth });
		cleanups.push(() => own.stop());
		const nodes = own.nodes;
		expect(await roundTrip(url, { sentinel: { nodes, ...auth }, commandTimeout: 2000 })).toEqual({ name: url, version: '1' });
		// Without the sentinels' credentials, or with a wrong password, the master cannot be
		// found: a clear error that never shows the password.
		const wrong = 'Wr0ng-s3ntinel-pw';
		for (const [sentinel, reason] of [
			[{ nodes }, /NOAUTH/],
			[{ nodes, ...auth, password: wrong }, /Password authentication failed/],
		]) {
			const errors = [];
			const info = new RedisInfoSessionManager(url, { sentinel, commandTimeout: 2000, onError: (e) => errors.push(e) });
			const failures = await Promise.all([info.getClientInfo('x').catch((e) => e), info.setLogLevel('x', 'info').catch((e) => e)]);
			await info.close();
			for (const error of failures) {
				expect(error).toBeInstanceOf(Error);
				expect(error.message).toMatch(/^Could not (read session info|store log level) for session x: /);
				expect(error.message).toMatch(reason);
			}
			expect(errors.map((e) => e.message)).toEqual([failures[1].message]);
			const shown = [...failures, ...errors].map((e) => `${e.message}\n${e.stack}\n${inspect(e)}`).join('\n') + inspect(info);
			expect(shown).not.toContain(wrong);
			expect(shown).not.toContain(auth.password);
		}
	});

	it("a node URL's credentials are that sentinel's alone: the master is found and +switch-master heard through them", async () => {
		const auth = { username: 'sentineluser', password: 'S3ntinel-pw' };
		const own = await startSentinelSet({ auth });
		cleanups.push(() => own.stop());
		const [s0, s1, s2] = own.sentinels;
		const as = (user, password, s) => `redis://${user}:${password}@127.0.0.1:${s.port}`;
		const wrong = 'Wr0ng-s3ntinel-pw';
		const found = (sentinel) => roundTrip(url, { sentinel, commandTimeout: 2000 });
		// Every sentinel by a URL with credentials, none given besides.
		expect(await found({ nodes: own.sentinels.map((s) => as(auth.username, auth.password, s)) })).toEqual({ name: url, version: '1' });
		// Only the first has them: the others' entries get none (NOAUTH), and a wrong
		// shared password does not replace the URL's.
		expect(await found({ nodes: [as(auth.username, auth.password, s0), `127.0.0.1:${s1.port}`, { host: '127.0.0.1', port: s2.port }] })).toEqual({ name: url, version: '1' });
		expect(await found({ nodes: [as(auth.username, auth.password, s0)], username: auth.username, password: wrong })).toEqual({ name: url, version: '1' });
		// A URL's wrong password is used for that sentinel, not the right shared one.
		const errors = [];
		const info = new RedisInfoSessionManager(url, {
			sentinel: { nodes: [as(auth.username, wrong, s0)], ...auth },
			commandTimeout: 2000,
			onError: (e) => errors.push(e),
		});
		const failure = await info.getClientInfo('x').catch((e) => e);
		await info.close();
		expect(failure).toBeInstanceOf(Error);
		expect(failure.message).toMatch(/^Could not read session info for session x: .*Password authentication failed/);
		const shown = [failure, ...errors].map((e) => `${e.message}\n${e.stack}\n${inspect(e)}`).join('\n') + inspect(info);
		expect(shown).not.toContain(wrong);
		expect(shown).not.toContain(auth.password);

		// The +switch-master listener too: its first sentinel refuses the URL's wrong
		// password, the next takes its right one. An idle stream, no liveness check in the
		// window: only the listener can move it away from a frozen master.
		const nodes = [as(auth.username, wrong, s0), as(auth.username, auth.password, s1), as(auth.username, auth.password, s2)];
		const streams = new RedisStreamSessionManager(url, { sentinel: { nodes }, commandTimeout: 2000, sessionTtlSeconds: 600, onError: () => {} });
		cleanups.push(() => streams.close());
		const rec = recorder();
		await streams.create('u1', rec);
		cleanups.push(await own.freezeMaster(s1.port));
		const sender = new RedisStreamSessionManager(url, { sentinel: { nodes: nodes.slice(1) }, commandTimeout: 2000 });
		cleanups.push(() => sender.close());
		await deliveryResumes(sender, rec, 'u1', 'via the new master', 15_000);
	});
});

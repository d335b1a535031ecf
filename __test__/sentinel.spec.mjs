// Redis Sentinel: the master is found through the sentinels and followed across a
// failover (SENTINEL FAILOVER, and a master killed with SIGKILL), against a private set
// of real redis-server processes (master, replica, three sentinels) on free ports.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisInfoSessionManager, RedisStreamSessionManager } from '../index.mjs';
import { deliveryResumes, eventually, recorder, until } from './helpers/redis.mjs';
import { MASTER_NAME, currentMasterPort, startSentinelSet } from './helpers/sentinel.mjs';
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
});

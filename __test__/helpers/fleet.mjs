// A fleet of server processes (fixtures/peer.mjs, ours or upstream's) on one Redis,
// replaced one at a time while every process sends, broadcasts, writes and reads info and
// deletes sessions; every message, info value and delete is accounted for at the end.
//
// Times are the test process's clock (`performance.now()`): a call's window runs from
// the moment the test asked a process for it to the moment that process answered.
//
// What must arrive exactly once at a stream (the copy of session X held by process P,
// "controller"): a message whose sender asked for it after P's copy was live (its
// create resolved; for upstream, its channels and liveness key seen in Redis), that
// resolved before a barrier that proved delivery from that sender to that copy (each
// process sends a marker to every live copy; a copy that got a sender's marker got
// everything that sender published before, as Redis keeps one publisher's order on one
// subscriber connection), and before X's delete was asked for. A broadcast that finds
// sessions by SCANning `available:session:*` (upstream's, ours with `upstreamCompatible`)
// also needs X's liveness key to exist all along: kept by a live process of ours, or less
// than 10 s after upstream created it (upstream refreshes its TTL of 10 s every 10 s, so
// the key can lapse at the first refresh, and once lapsed stays gone: that is upstream's
// behaviour, counted apart). Nothing ever arrives where it was not sent, after its
// session's delete completed, at upstream's streams for a broadcast of ours without
// `upstreamCompatible`, or at a stream created after Redis took the message; anything
// else arrives at most once.
import { performance } from 'node:perf_hooks';
import { spawnPeer } from './peer.mjs';
import { eventually } from './redis.mjs';
import { seededRandom } from './random.mjs';

const now = () => performance.now();
/** Upstream's liveness key lives at least this long after its create was asked for. */
const UPSTREAM_KEY_MS = 10_000;
const LEVELS = ['debug', 'info', 'notice', 'warning', 'error', 'critical', 'alert', 'emergency'];


/**
 * @typedef {{ name: string, kind: 'ours' | 'upstream', compat: boolean, peer: any, alive: boolean,
 *   sending: boolean, retiring: boolean, inflight: number, snapshot?: Record<string, any>,
 *   failures?: string[], onError?: string[] }} Proc
 * @typedef {{ proc: Proc, session: Session, cReq: number, cRes: number, end: number | null,
 *   cutoff: Map<string, number> }} Controller
 * @typedef {{ id: string, controllers: Controller[], busy: boolean,
 *   deleting: null | { tReq: number, tRes?: number, by: Proc }, deleted: boolean,
 *   subs: Map<string, { byOurs: boolean }> }} Session
 * @typedef {{ text: string, kind: 'send' | 'broadcast' | 'marker', sender: Proc,
 *   targets: Set<string> | null, viaScan: boolean, tReq: number, tRes: number }} Message
 */

export class Fleet {
	/** @type {Proc[]} */
	procs = [];
	/** @type {Map<string, Session>} */
	sessions = new Map();
	/** @type {Message[]} */
	messages = [];
	/** What went wrong while the traffic ran (checked at the end). @type {string[]} */
	problems = [];
	/** Subscription memberships an info delete left behind: `id uri`. @type {string[]} */
	dangling = [];
	/** Those an info delete of ours without upstreamCompatible cannot see (only upstream added them). @type {string[]} */
	expectedDangling = [];
	/** Our reverse indexes an info delete of upstream's left behind. @type {string[]} */
	leftReverseIndexes = [];
	stats = { infoChecked: 0, deletes: 0, deletesBy: { ours: 0, upstream: 0 }, ticks: 0, barriers: 0 };
	#seq = 0;
	#running = false;
	/** @type {Promise<void> | undefined} */
	#loop;

	/**
	 * @param {{ url: string, redis: any, seed: number, track: (peer: any) => void }} options
	 * `redis` an observer client; `track` registers a peer to be killed after the test.
	 */
	constructor({ url, redis, seed, track }) {
		this.url = url;
		this.redis = redis;
		this.seed = seed;
		this.rand = seededRandom(seed);
		this.track = track;
	}

	/** @template T @param {T[]} list @returns {T} */
	pick(list) {
		return list[Math.floor(this.rand() * list.length)];
	}

	get alive() {
		return this.procs.filter((p) => p.alive);
	}

	/** Live processes not being taken out of service: where traffic may read. */
	get serving() {
		return this.procs.filter((p) => p.alive && !p.retiring);
	}

	/** Sessions not deleted, with a copy on a live process. */
	get live() {
		return [...this.sessions.values()].filter((s) => !s.deleting && s.controllers.some((c) => c.end === null));
	}

	/**
	 * Starts a process. Upstream's: its sends and deletes go through a second upstream
	 * manager, and a message for a closed stream is recorded (see fixtures/peer.mjs).
	 * @param {string} name @param {'ours' | 'upstream'} kind
	 * @param {{ compat?: boolean, ttl?: number }} [options]
	 */
	async spawn(name, kind, { compat = false, ttl } = {}) {
		const options =
			kind === 'upstream'
				? { fixture: { sender: 'separate', closedEnqueue: 'record' } }
				: { upstreamCompatible: compat, ...(ttl ? { sessionTtlSeconds: ttl } : {}) };
		const peer = await spawnPeer(kind, this.url, options);
		this.track(peer);
		/** @type {Proc} */
		const proc = { name, kind, compat: kind === 'upstream' || compat, peer, alive: true, sending: true, retiring: false, inflight: 0 };
		this.procs.push(proc);
		return proc;
	}

	/**
	 * A client's stream for session `id` on `proc` (a new session, or one re-created there
	 * as a client that reconnects does).
	 * @param {Proc} proc @param {string} id
	 */
	async create(proc, id) {
		let session = this.sessions.get(id);
		if (!session) {
			session = { id, controllers: [], busy: false, deleting: null, deleted: false, subs: new Map() };
			this.sessions.set(id, session);
		}
		const cReq = now();
		await proc.peer.request('create', { session: id });
		if (proc.kind === 'upstream') {
			// Upstream's create resolves before its subscriptions and key exist.
			await eventually(
				async () => {
					const counts = await this.redis.pubSubNumSub([`session:${id}`, `delete:session:${id}`]);
					return (
						counts[`session:${id}`] >= 1 &&
						counts[`delete:session:${id}`] >= 1 &&
						(await this.redis.exists(`available:session:${id}`)) === 1
					);
				},
				5000,
				`upstream's subscriptions of ${id}`,
			);
		}
		/** @type {Controller} */
		const controller = { proc, session, cReq, cRes: now(), end: null, cutoff: new Map() };
		session.controllers.push(controller);
		return controller;
	}

	/**
	 * Info as a client's initialize and resources/subscribe write it, from `proc`; then
	 * read back from another live process (no other write or delete of the session
	 * meanwhile).
	 * @param {Proc} proc @param {Session} session
	 */
	async writeInfo(proc, session) {
		await this.hold(session);
		try {
			await this.#writeInfo(proc, session);
		} finally {
			session.busy = false;
		}
	}

	/** @param {Proc} proc @param {Session} session */
	async #writeInfo(proc, session) {
		const v = ++this.#seq;
		const info = { name: `client-${session.id}`, version: String(v) };
		const caps = { experimental: { v } };
		const level = LEVELS[v % LEVELS.length];
		const uri = `res://${v % 3}`;
		const id = session.id;
		await proc.peer.request('info', { method: 'setClientInfo', args: [id, info] });
		await proc.peer.request('info', { method: 'setClientCapabilities', args: [id, caps] });
		await proc.peer.request('info', { method: 'setLogLevel', args: [id, level] });
		await proc.peer.request('info', { method: 'addSubscription', args: [id, uri] });
		session.subs.set(uri, { byOurs: proc.kind === 'ours' || (session.subs.get(uri)?.byOurs ?? false) });
		const others = this.serving.filter((p) => p !== proc);
		const reader = others.length ? this.pick(others) : proc;
		reader.inflight++;
		try {
			await this.#readBack(proc, reader, session, { info, caps, level, uri });
		} finally {
			reader.inflight--;
		}
		this.stats.infoChecked++;
	}

	/**
	 * @param {Proc} proc the writer @param {Proc} reader @param {Session} session
	 * @param {{ info: object, caps: object, level: string, uri: string }} written
	 */
	async #readBack(proc, reader, session, { info, caps, level, uri }) {
		const id = session.id;
		const where = `info of ${id} written by ${proc.name}, read by ${reader.name}`;
		const read = (method, args) => reader.peer.request('info', { method, args }).catch((e) => `rejected: ${e.message}`);
		const got = await read('getClientInfo', [id]);
		if (JSON.stringify(got) !== JSON.stringify(info)) this.problems.push(`${where}: client info ${JSON.stringify(got)}`);
		const gotCaps = await read('getClientCapabilities', [id]);
		if (JSON.stringify(gotCaps) !== JSON.stringify(caps)) this.problems.push(`${where}: capabilities ${JSON.stringify(gotCaps)}`);
		// Upstream cannot read the JSON-quoted level it writes itself (its defect); it reads ours.
		if (reader.kind === 'ours' || proc.kind === 'ours') {
			const gotLevel = await read('getLogLevel', [id]);
			if (gotLevel !== level) this.problems.push(`${where}: log level ${JSON.stringify(gotLevel)} instead of ${level}`);
		}
		const members = await read('getSubscriptions', [uri]);
		if (!Array.isArray(members) || !members.includes(id)) this.problems.push(`${where}: ${uri} subscribers ${JSON.stringify(members)}`);
	}

	/**
	 * @param {Proc} proc @param {string[] | null} ids null: a broadcast
	 * @param {string} text @param {'send' | 'broadcast' | 'marker'} kind
	 */
	async send(proc, ids, text, kind) {
		/** @type {Message} */
		const message = {
			text,
			kind,
			sender: proc,
			targets: ids ? new Set(ids) : null,
			viaScan: kind === 'broadcast' && proc.compat,
			tReq: now(),
			tRes: Infinity,
		};
		this.messages.push(message);
		if (ids) await proc.peer.request('send', { sessions: ids, data: text });
		else await proc.peer.request('broadcast', { data: text });
		message.tRes = now();
	}

	/**
	 * Ends session `session` from `proc` as HttpTransport's DELETE does, then checks it
	 * ended everywhere: `has` false from every live process (at once when ours asked),
	 * every live copy closed, no info left, in no subscription set (a membership left by
	 * an info delete of ours without `upstreamCompatible` that only upstream wrote is
	 * counted in `dangling`: that is what the README warns about).
	 * @param {Proc} proc @param {Session} session
	 */
	async delete(proc, session) {
		const id = session.id;
		await this.hold(session);
		session.deleting = { tReq: now(), by: proc };
		await proc.peer.request('deleteSession', { session: id });
		const resolved = now();
		this.stats.deletes++;
		this.stats.deletesBy[proc.kind]++;
		const where = `${id} deleted by ${proc.name}`;
		for (const p of this.alive) {
			const has = () => p.peer.request('streams', { method: 'has', args: [id] });
			if (proc.kind === 'ours') {
				if ((await has()) !== false) this.problems.push(`${where}: has() true from ${p.name} after the delete resolved`);
			} else {
				// Upstream's delete only publishes; the holder removes the key when it hears it.
				await eventually(async () => (await has()) === false, 5000, `${where}: has() false from ${p.name}`).catch((e) =>
					this.problems.push(e.message),
				);
			}
		}
		// From here on nothing may reach the session (upstream's delete is only done once
		// its holder heard it and removed the key).
		session.deleting.tRes = proc.kind === 'ours' ? resolved : now();
		for (const c of session.controllers.filter((c) => c.end === null)) {
			await eventually(async () => (await c.proc.peer.request('received', { session: id }))?.closed, 5000, `${where}: closed on ${c.proc.name}`).catch(
				(e) => this.problems.push(e.message),
			);
		}
		for (const p of this.alive) {
			for (const method of ['getClientInfo', 'getClientCapabilities', ...(p.kind === 'ours' ? ['getLogLevel'] : [])]) {
				const left = await p.peer.request('info', { method, args: [id] }).then(
					(v) => v,
					() => undefined,
				);
				if (left !== undefined) this.problems.push(`${where}: ${method} from ${p.name} still reads ${JSON.stringify(left)}`);
			}
		}
		for (const [uri, { byOurs }] of session.subs) {
			if (proc.kind === 'ours' && !proc.compat && !byOurs) this.expectedDangling.push(`${id} ${uri}`);
			const members = await proc.peer.request('info', { method: 'getSubscriptions', args: [uri] });
			if (!members.includes(id)) continue;
			if (proc.kind === 'ours' && !proc.compat && !byOurs) this.dangling.push(`${id} ${uri}`);
			else this.problems.push(`${where}: still in ${uri}'s subscribers`);
		}
		// Keys of the session left in Redis. Upstream's info delete does not know our
		// reverse index (`tmcp:session_subscriptions:{id}`, written by ours' addSubscription):
		// that one is counted; anything else is a problem.
		for (const key of [
			`available:session:${id}`,
			`tmcp:client_info:${id}`,
			`tmcp:client_capabilities:${id}`,
			`tmcp:log_level:${id}`,
			`tmcp:session_subscriptions:${id}`,
		]) {
			if (!(await this.redis.exists(key))) continue;
			if (proc.kind === 'upstream' && key.startsWith('tmcp:session_subscriptions:')) this.leftReverseIndexes.push(key);
			else this.problems.push(`${where}: ${key} is left in Redis`);
		}
		session.deleted = true;
	}

	/**
	 * One round of traffic from every sending process at once: targeted sends to 1 to 3
	 * live sessions, a broadcast every other round, one info write and read-back.
	 */
	async #tick() {
		const round = this.stats.ticks;
		await Promise.all(
			this.procs
				.filter((p) => p.alive && p.sending)
				.map(async (p, i) => {
					p.inflight++;
					try {
						const live = this.live;
						if (live.length) {
							const n = 1 + Math.floor(this.rand() * 3);
							const ids = [...new Set(Array.from({ length: n }, () => this.pick(live).id))];
							await this.send(p, ids, `t${++this.#seq}:${p.name}`, 'send');
						}
						if ((round + i) % 2 === 0) await this.send(p, null, `b${++this.#seq}:${p.name}`, 'broadcast');
						const free = this.live.filter((s) => !s.busy);
						if (free.length) await this.writeInfo(p, this.pick(free));
					} catch (error) {
						this.problems.push(`traffic from ${p.name}: ${error.message}`);
					} finally {
						p.inflight--;
					}
				}),
		);
		this.stats.ticks++;
	}

	startTraffic() {
		this.#running = true;
		this.#loop = (async () => {
			while (this.#running) await this.#tick();
		})();
	}

	async stopTraffic() {
		this.#running = false;
		await this.#loop;
	}

	/** Waits until `n` more rounds of traffic completed. */
	async ticks(n) {
		const target = this.stats.ticks + n;
		await eventually(() => this.stats.ticks >= target, 30_000, `${n} rounds of traffic`);
	}

	/** Waits until the session is free (no info write or delete on it), then holds it. */
	async hold(session) {
		// Checked and taken in one step: with `await eventually(...)` between the check and
		// `busy = true`, two processes could both find it free and write its info at once,
		// and the read-back saw the other write (a fresh-clone CI run, 1 of 438).
		const deadline = Date.now() + 10_000;
		while (session.busy) {
			if (Date.now() > deadline) throw new Error(`timed out waiting for ${session.id} free`);
			await new Promise((r) => setTimeout(r, 20));
		}
		session.busy = true;
	}

	/**
	 * Every live process sends a marker to every live copy of a live session; once all
	 * arrived, everything each process published before is known to have arrived.
	 */
	async barrier() {
		const controllers = this.live.flatMap((s) => s.controllers.filter((c) => c.end === null));
		const ids = [...new Set(controllers.map((c) => c.session.id))];
		const senders = this.alive;
		const n = ++this.stats.barriers;
		const tReq = now();
		await Promise.all(senders.map((p) => this.send(p, ids, `k${n}:${p.name}`, 'marker')));
		for (const proc of new Set(controllers.map((c) => c.proc))) {
			const mine = controllers.filter((c) => c.proc === proc);
			let missing = [];
			await eventually(
				async () => {
					const all = await proc.peer.request('receivedAll');
					missing = mine.flatMap((c) => {
						const state = all[c.session.id];
						const lacking = senders.filter((p) => !state?.chunks.includes(`k${n}:${p.name}`));
						if (!lacking.length) return [];
						return [`${c.session.id}${state?.closed ? ' (its stream was closed)' : ''} lacks ${lacking.map((p) => p.name).join(', ')}`];
					});
					return missing.length === 0;
				},
				10_000,
				`barrier ${n}'s markers at ${proc.name}`,
			).catch((error) => {
				throw new Error(`${error.message}: ${missing.join('; ')}`);
			});
		}
		for (const c of controllers) for (const p of senders) c.cutoff.set(p.name, tReq);
	}

	/**
	 * Takes `proc` out of service: no more traffic from it, a barrier, a last look at what
	 * its streams received, then `kill` (SIGKILL by PID: upstream has no close()) or
	 * `close` (our close(), then the process is ended by PID).
	 * @param {Proc} proc @param {'kill' | 'close'} how
	 */
	async retire(proc, how) {
		proc.sending = false;
		proc.retiring = true;
		await eventually(() => proc.inflight === 0, 20_000, `${proc.name}'s traffic to finish`);
		await this.barrier();
		const end = now();
		for (const s of this.sessions.values()) for (const c of s.controllers) if (c.proc === proc && c.end === null) c.end = end;
		proc.failures = await proc.peer.request('failures');
		proc.onError = proc.peer.events.filter((e) => e.event === 'onError').map((e) => e.error);
		if (how === 'close') await proc.peer.request('close');
		proc.snapshot = await proc.peer.request('receivedAll');
		proc.alive = false;
		await proc.peer.kill('SIGKILL');
	}

	/**
	 * Whether `session`'s liveness key is known to exist from `t0` to `t1`: a live copy of
	 * ours keeps it, upstream's is sure to live 10 s after its create.
	 * @param {Session} session @param {number} t0 @param {number} t1
	 */
	#keyAlive(session, t0, t1) {
		return session.controllers.some((c) =>
			c.proc.kind === 'ours' ? c.cRes < t0 && (c.end === null || c.end > t1) : c.cRes < t0 && c.cReq + UPSTREAM_KEY_MS > t1,
		);
	}

	/**
	 * Stops nothing; reads what every stream received and checks every message against
	 * the rule at the top of this file. Returns the counts and the violations.
	 */
	async verify() {
		for (const p of this.alive) {
			p.snapshot = await p.peer.request('receivedAll');
			p.failures = await p.peer.request('failures');
			p.onError = p.peer.events.filter((e) => e.event === 'onError').map((e) => e.error);
		}
		const violations = [];
		const counts = {
			exactlyOnce: 0,
			atMostOnce: 0,
			never: 0,
			/** Broadcasts of ours without upstreamCompatible at upstream's copies, where a SCAN would have delivered. */
			oursBroadcastsAtUpstream: { expected: 0, arrived: 0 },
			/** Broadcasts of ours with upstreamCompatible at upstream's copies that had to arrive. */
			compatBroadcastsAtUpstream: { expected: 0, arrived: 0 },
			/** SCAN broadcasts at a copy whose upstream key could have lapsed (upstream's refresh). */
			upstreamKeyMayHaveLapsed: 0,
		};
		const controllers = [...this.sessions.values()].flatMap((s) => s.controllers);
		const tallies = new Map(
			controllers.map((c) => {
				const state = c.proc.snapshot?.[c.session.id] ?? { chunks: [], late: [] };
				const tally = new Map();
				for (const text of state.chunks) tally.set(text, (tally.get(text) ?? 0) + 1);
				const late = new Set(state.late ?? []);
				return [c, { tally, late }];
			}),
		);
		for (const m of this.messages) {
			for (const c of controllers) {
				const { tally, late } = /** @type {any} */ (tallies.get(c));
				const got = tally.get(m.text) ?? 0;
				const arrived = got > 0 || late.has(m.text);
				const where = `${m.text} (${m.kind} from ${m.sender.name}) at ${c.session.id} on ${c.proc.name}`;
				const session = c.session;
				// Where nothing may arrive: a stream the message was not sent to; a session
				// already deleted; upstream's streams for a broadcast of ours without
				// upstreamCompatible (they never subscribe to our broadcast channel); a stream
				// created after Redis took the message (ours resolves once it did; upstream's
				// send resolves before it publishes, so not for upstream's).
				const never =
					(m.targets && !m.targets.has(session.id) && 'it was not sent there') ||
					(session.deleting?.tRes !== undefined && m.tReq > session.deleting.tRes && 'the session was deleted before') ||
					(m.kind === 'broadcast' && !m.viaScan && c.proc.kind === 'upstream' && 'upstream does not hear our broadcast channel') ||
					(m.sender.kind === 'ours' && m.tRes < c.cReq && 'the stream was created after Redis took it');
				// Sent while both its sender and this stream were up (see the top of this file).
				const cutoff = c.cutoff.get(m.sender.name);
				const window =
					c.cRes < m.tReq &&
					cutoff !== undefined &&
					m.tRes < cutoff &&
					(!session.deleting || m.tRes < session.deleting.tReq);
				const base = !never && window;
				const keyAlive = this.#keyAlive(session, m.tReq, m.tRes);
				if (window && keyAlive && m.kind === 'broadcast' && m.sender.kind === 'ours' && c.proc.kind === 'upstream') {
					// Broadcasts of ours at upstream's streams that a SCAN finds: with the option
					// each had to arrive; without it, what the option would have delivered.
					const bucket = m.viaScan ? counts.compatBroadcastsAtUpstream : counts.oursBroadcastsAtUpstream;
					bucket.expected++;
					bucket.arrived += got;
				}
				if (never) {
					counts.never++;
					if (arrived) violations.push(`${where}: arrived (${got}×${late.has(m.text) ? ', after the stream closed' : ''}) though ${never}`);
				} else if (base && m.viaScan && !keyAlive) {
					counts.upstreamKeyMayHaveLapsed++;
					counts.atMostOnce++;
					if (got > 1) violations.push(`${where}: arrived ${got}×`);
				} else if (base) {
					counts.exactlyOnce++;
					if (got !== 1) violations.push(`${where}: arrived ${got}× instead of once`);
				} else {
					counts.atMostOnce++;
					if (got > 1) violations.push(`${where}: arrived ${got}×`);
				}
			}
		}
		// Every session still live is live from every process, and its copies are open.
		for (const session of this.live) {
			for (const p of this.alive) {
				if ((await p.peer.request('streams', { method: 'has', args: [session.id] })) !== true) {
					violations.push(`${session.id}: has() false from ${p.name} while it lives`);
				}
			}
			for (const c of session.controllers.filter((c) => c.end === null)) {
				if (c.proc.snapshot?.[session.id]?.closed) violations.push(`${session.id}: its stream on ${c.proc.name} was closed`);
			}
		}
		for (const p of this.procs) {
			if (p.failures?.length) violations.push(`${p.name}: ${p.failures.join('; ')}`);
			if (p.onError?.length) violations.push(`${p.name} onError: ${p.onError.join('; ')}`);
		}
		return { counts, violations };
	}
}

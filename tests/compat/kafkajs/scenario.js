// The client compatibility scenario (scripts/compat) with KafkaJS.
// Usage: node scenario.js HOST:PORT
// Prints "STEP n name: ok" per step passed; on the first failure prints "FAIL step n name: why"
// and exits 1.
'use strict'
const { Kafka, logLevel, Partitioners } = require('kafkajs')

const bootstrap = process.argv[2] || process.env.BOOTSTRAP
if (!bootstrap) {
  console.error('usage: node scenario.js HOST:PORT')
  process.exit(2)
}

const TOPIC = 'compat-kafkajs'
const TXN_TOPIC = 'compat-kafkajs-txn'
const GROUP = 'compat-kafkajs-group'
const PARTITIONS = 3
const FIRST_BATCH = 100
const SECOND_BATCH = 10
// Every wait is bounded: a hung client fails the step instead of hanging CI.
const WAIT_MS = 60000
// After the expected records arrived, how long to watch for unexpected extra ones.
const QUIET_MS = 1500
// A fetch long poll this short lets consumer.disconnect() return quickly.
const FETCH_WAIT_MS = 500

const kafka = new Kafka({
  clientId: 'sluice-compat',
  brokers: [bootstrap],
  logLevel: logLevel.ERROR,
  retry: { retries: 8 }
})

class StepFailed extends Error {}

function check (condition, message) {
  if (!condition) throw new StepFailed(message)
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function waitFor (what, predicate) {
  const deadline = Date.now() + WAIT_MS
  while (!predicate()) {
    check(Date.now() < deadline, `timed out after ${WAIT_MS} ms waiting for ${what}`)
    await sleep(50)
  }
}

function record (i) {
  return { key: `key-${i}`, value: `value-${i}`, headers: { index: `${i}`, client: 'kafkajs' } }
}

async function produce (producer, from, to) {
  const messages = []
  for (let i = from; i < to; i++) messages.push(record(i))
  const acks = await producer.send({ topic: TOPIC, acks: -1, messages })
  check(acks.length > 0, 'produce returned no acks')
  for (const ack of acks) {
    check(ack.errorCode === 0, `partition ${ack.partition} acked with error ${ack.errorCode}`)
  }
}

// Checks one consumed message against what produce() sent for its index and records it.
function accept (seen, message) {
  const key = message.key.toString()
  const index = Number(key.slice('key-'.length))
  const want = record(index)
  check(key === want.key, `unexpected key ${key}`)
  check(message.value.toString() === want.value, `${key}: value ${message.value}`)
  for (const [name, value] of Object.entries(want.headers)) {
    const got = message.headers[name]
    check(got !== undefined && got.toString() === value, `${key}: header ${name} is ${got}`)
  }
  check(!seen.has(index), `${key} delivered twice`)
  seen.add(index)
  return index
}

// A group member that commits each record's offset before taking the next, so a rebalance
// never hands an already-seen record to the other member.
async function startMember (name, seen, perMember, failure) {
  const consumer = kafka.consumer({
    groupId: GROUP,
    sessionTimeout: 10000,
    heartbeatInterval: 1000,
    maxWaitTimeInMs: FETCH_WAIT_MS
  })
  const assigned = []
  consumer.on(consumer.events.GROUP_JOIN, e => {
    const parts = e.payload.memberAssignment[TOPIC] || []
    assigned.push(parts.length)
  })
  await consumer.connect()
  await consumer.subscribe({ topic: TOPIC, fromBeginning: true })
  perMember[name] = 0
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic, partition, message }) => {
      try {
        accept(seen, message)
      } catch (e) {
        // KafkaJS would retry a throwing handler; keep the first failure for the step instead.
        failure.error = failure.error || e
        return
      }
      perMember[name]++
      const next = (BigInt(message.offset) + 1n).toString()
      await consumer.commitOffsets([{ topic, partition, offset: next }])
    }
  })
  return { consumer, assigned }
}

async function stepCreateTopic (admin) {
  const created = await admin.createTopics({
    waitForLeaders: true,
    topics: [
      { topic: TOPIC, numPartitions: PARTITIONS, replicationFactor: 1 },
      { topic: TXN_TOPIC, numPartitions: 1, replicationFactor: 1 }
    ]
  })
  check(created, 'createTopics reported the topics as already there')
  const meta = await admin.fetchTopicMetadata({ topics: [TOPIC] })
  const partitions = meta.topics[0].partitions.length
  check(partitions === PARTITIONS, `metadata shows ${partitions} partitions, want ${PARTITIONS}`)
}

async function stepProduce (producer) {
  await produce(producer, 0, FIRST_BATCH)
}

async function stepGroupOfTwo (failure) {
  const seen = new Set()
  const perMember = {}
  const members = [
    await startMember('a', seen, perMember, failure),
    await startMember('b', seen, perMember, failure)
  ]
  try {
    await waitFor(`${FIRST_BATCH} records`, () => failure.error || seen.size >= FIRST_BATCH)
    // The first member may read the whole batch before the second has joined: the group
    // settles (both own partitions) before they leave.
    await waitFor('both members to own partitions', () => failure.error ||
      members.every(m => m.assigned.length > 0 && m.assigned[m.assigned.length - 1] > 0))
    await sleep(QUIET_MS)
    if (failure.error) throw failure.error
    check(seen.size === FIRST_BATCH, `got ${seen.size} records, want ${FIRST_BATCH}`)
    for (const [i, m] of members.entries()) {
      const last = m.assigned[m.assigned.length - 1]
      check(last > 0, `member ${i} ended with no partitions (assignments ${m.assigned})`)
    }
    console.log(`  group of two: member a got ${perMember.a}, member b got ${perMember.b} records`)
  } finally {
    for (const m of members) await m.consumer.disconnect()
  }
}

async function stepResume (producer, admin, failure) {
  await produce(producer, FIRST_BATCH, FIRST_BATCH + SECOND_BATCH)
  const seen = new Set()
  const perMember = {}
  const member = await startMember('c', seen, perMember, failure)
  try {
    await waitFor(`${SECOND_BATCH} new records`, () => failure.error || seen.size >= SECOND_BATCH)
    await sleep(QUIET_MS)
    if (failure.error) throw failure.error
    const old = [...seen].filter(i => i < FIRST_BATCH)
    check(old.length === 0, `resumed consumer got already-committed records ${old}`)
    check(seen.size === SECOND_BATCH, `resumed consumer got ${seen.size} records, want ${SECOND_BATCH}`)
    pass(4, 'resume from committed offsets')
    await stepDescribeGroup(admin)
  } finally {
    await member.consumer.disconnect()
  }
}

// Runs while the resumed member is still in the group: one Stable member.
async function stepDescribeGroup (admin) {
  const { groups } = await admin.listGroups()
  check(groups.some(g => g.groupId === GROUP), `listGroups lacks ${GROUP}: ${JSON.stringify(groups)}`)
  const described = (await admin.describeGroups([GROUP])).groups[0]
  check(described.errorCode === 0, `describeGroups error ${described.errorCode}`)
  check(described.state === 'Stable', `group state ${described.state}, want Stable`)
  check(described.members.length === 1, `group has ${described.members.length} members, want 1`)
  check(described.protocolType === 'consumer', `protocol type ${described.protocolType}`)
  const offsets = await admin.fetchOffsets({ groupId: GROUP, topics: [TOPIC] })
  const total = offsets[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0)
  check(total === FIRST_BATCH + SECOND_BATCH, `committed offsets add up to ${total}`)
  pass(5, 'list and describe group')
}

async function stepTransactions () {
  const producer = kafka.producer({
    transactionalId: 'compat-kafkajs-txn',
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner
  })
  await producer.connect()
  const batch = (kind, n) => Array.from({ length: n }, (_, i) => ({ key: `${kind}-${i}`, value: kind }))
  try {
    for (const [kind, commit] of [['committed', true], ['aborted', false], ['sentinel', true]]) {
      const txn = await producer.transaction()
      await txn.send({ topic: TXN_TOPIC, messages: batch(kind, kind === 'sentinel' ? 1 : 5) })
      if (commit) await txn.commit()
      else await txn.abort()
    }
  } finally {
    await producer.disconnect()
  }
  // read_committed (KafkaJS's default): everything up to the sentinel, minus the aborted batch.
  const consumer = kafka.consumer({
    groupId: 'compat-kafkajs-txn-reader',
    readUncommitted: false,
    maxWaitTimeInMs: FETCH_WAIT_MS
  })
  const values = []
  await consumer.connect()
  try {
    await consumer.subscribe({ topic: TXN_TOPIC, fromBeginning: true })
    await consumer.run({ eachMessage: async ({ message }) => { values.push(message.value.toString()) } })
    await waitFor('the sentinel record', () => values.includes('sentinel'))
  } finally {
    await consumer.disconnect()
  }
  const want = ['committed', 'committed', 'committed', 'committed', 'committed', 'sentinel']
  check(JSON.stringify(values) === JSON.stringify(want), `read_committed saw ${values}`)
}

async function stepDeleteTopics (admin) {
  await admin.deleteTopics({ topics: [TOPIC, TXN_TOPIC], timeout: 10000 })
  // The answer means the deletion is committed; a broker that has not applied it yet (in a
  // cluster, as in Apache Kafka's) may still list the topics for a moment.
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    const left = (await admin.listTopics()).filter(t => t === TOPIC || t === TXN_TOPIC)
    if (left.length === 0) return
    check(Date.now() < deadline, `topics still listed ${WAIT_MS} ms after delete: ${left}`)
    await sleep(50)
  }
}

let stepStart = Date.now()

function pass (n, name) {
  console.log(`STEP ${n} ${name}: ok (${Date.now() - stepStart} ms)`)
  stepStart = Date.now()
}

async function main () {
  const admin = kafka.admin()
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  // The first record check that failed inside a consumer's handler.
  const failure = {}
  let current = { n: 0, name: 'connect' }
  const steps = [
    [1, 'create topic', () => stepCreateTopic(admin)],
    [2, 'produce keyed records with headers', () => stepProduce(producer)],
    [3, 'consumer group of two', () => stepGroupOfTwo(failure)],
    [4, 'resume from committed offsets', () => stepResume(producer, admin, failure)],
    [6, 'transactions', () => stepTransactions()],
    [7, 'delete topic', () => stepDeleteTopics(admin)]
  ]
  try {
    await admin.connect()
    await producer.connect()
    for (const [n, name, run] of steps) {
      current = { n, name }
      await run()
      // Step 4 reports 4 and 5 itself (5 runs while its member is still in the group).
      if (n !== 4) pass(n, name)
    }
  } catch (e) {
    console.log(`FAIL step ${current.n} ${current.name}: ${e.stack || e}`)
    process.exitCode = 1
  } finally {
    await producer.disconnect().catch(() => {})
    await admin.disconnect().catch(() => {})
  }
}

main()

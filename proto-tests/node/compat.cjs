// Produces and consumes in a group with a Node.js Kafka client at its default settings, for
// proto-tests/test_more_clients.py. Usage:
//   node compat.cjs kafkajs|platformatic <bootstrap> <topic> <group> <count>
// The topic is created with 3 partitions through the client's own admin API. Two consumers
// join one group and read from the earliest offset (the only setting changed from the
// defaults, which start at the latest offset); <count> keyed records are produced, and the
// program prints one JSON line: {"produced": n, "consumed": n, "distinct": n, "members": [...]},
// where members counts the records each consumer received. It exits non-zero on any error.
'use strict'

const [lib, bootstrap, topic, group, countArg] = process.argv.slice(2)
const count = Number(countArg)
const deadline = Date.now() + 60000

function expected (i) {
  return { key: `k${i}`, value: `record-${i}` }
}

async function untilAll (seen) {
  while (seen.size < count) {
    if (Date.now() > deadline) throw new Error(`timed out with ${seen.size} of ${count} records`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

async function runKafkajs () {
  const { Kafka, logLevel } = require('kafkajs')
  const kafka = new Kafka({ clientId: 'compat-kafkajs', brokers: [bootstrap], logLevel: logLevel.WARN })
  const admin = kafka.admin()
  await admin.connect()
  await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true })
  await admin.disconnect()

  const producer = kafka.producer()
  await producer.connect()
  const messages = []
  for (let i = 0; i < count; i++) messages.push(expected(i))
  await producer.send({ topic, messages })
  await producer.disconnect()

  const seen = new Map()
  const members = []
  const consumers = []
  for (let m = 0; m < 2; m++) {
    const consumer = kafka.consumer({ groupId: group })
    members.push(0)
    await consumer.connect()
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ message }) => {
        members[m]++
        seen.set(message.key.toString(), message.value.toString())
      }
    })
    consumers.push(consumer)
  }
  await untilAll(seen)
  for (const c of consumers) await c.disconnect()
  return { seen, members }
}

async function runPlatformatic () {
  const { Admin, Producer, Consumer, stringSerializers, stringDeserializers } = require('@platformatic/kafka')
  const admin = new Admin({ clientId: 'compat-platformatic', bootstrapBrokers: [bootstrap] })
  await admin.createTopics({ topics: [topic], partitions: 3, replicas: 1 })
  await admin.close()

  const producer = new Producer({ clientId: 'compat-platformatic', bootstrapBrokers: [bootstrap], serializers: stringSerializers })
  const messages = []
  for (let i = 0; i < count; i++) messages.push({ topic, ...expected(i) })
  await producer.send({ messages })
  await producer.close()

  const seen = new Map()
  const members = []
  const consumers = []
  for (let m = 0; m < 2; m++) {
    const consumer = new Consumer({
      groupId: group,
      clientId: `compat-platformatic-${m}`,
      bootstrapBrokers: [bootstrap],
      deserializers: stringDeserializers
    })
    members.push(0)
    const stream = await consumer.consume({ topics: [topic], mode: 'earliest' })
    stream.on('data', message => {
      members[m]++
      seen.set(message.key, message.value)
    })
    stream.on('error', err => { console.error(err); process.exit(2) })
    consumers.push(consumer)
  }
  await untilAll(seen)
  for (const c of consumers) await c.close(true)
  return { seen, members }
}

async function main () {
  const run = { kafkajs: runKafkajs, platformatic: runPlatformatic }[lib]
  if (!run) throw new Error(`unknown client ${lib}`)
  const { seen, members } = await run()
  for (let i = 0; i < count; i++) {
    const { key, value } = expected(i)
    if (seen.get(key) !== value) throw new Error(`record ${key}: got ${seen.get(key)}`)
  }
  const consumed = members.reduce((a, b) => a + b, 0)
  console.log(JSON.stringify({ produced: count, consumed, distinct: seen.size, members }))
}

main().then(() => process.exit(0), err => { console.error(err); process.exit(1) })

// The client compatibility scenario (scripts/compat) with Sarama (IBM/sarama): a sync producer,
// consumer groups, the cluster admin and transactions, at Sarama's default protocol version or
// at the one SARAMA_PROTOCOL_VERSION names (Sarama picks request versions from it, not from
// ApiVersions).
// Usage: go run . HOST:PORT (or BOOTSTRAP=HOST:PORT)
// Prints "STEP n name: ok" per step passed; on the first failure prints "FAIL step n name: why"
// and exits 1.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"sluice/compat/scenario"

	"github.com/IBM/sarama"
)

const (
	topic    = "compat-sarama"
	txnTopic = "compat-sarama-txn"
	group    = "compat-sarama-group"
)

var (
	bootstrap []string
	version   = sarama.DefaultVersion
)

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.ClientID = "sluice-compat-sarama"
	c.Version = version
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Return.Successes = true
	c.Producer.Retry.Max = 8
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Offsets.AutoCommit.Enable = false
	c.Consumer.MaxWaitTime = 500 * time.Millisecond
	c.Metadata.Retry.Max = 10
	return c
}

func message(i int) *sarama.ProducerMessage {
	want := scenario.Want("sarama", i)
	m := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(want.Key),
		Value: sarama.StringEncoder(want.Value)}
	for _, h := range want.Headers {
		m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: []byte(h.Value)})
	}
	return m
}

// consumed is a consumed record in the scenario's terms.
func consumed(m *sarama.ConsumerMessage) scenario.Record {
	c := scenario.Record{Key: string(m.Key), Value: string(m.Value)}
	for _, h := range m.Headers {
		c.Headers = append(c.Headers, scenario.Header{Key: string(h.Key), Value: string(h.Value)})
	}
	return c
}

func produce(producer sarama.SyncProducer, from, to int) error {
	var msgs []*sarama.ProducerMessage
	for i := from; i < to; i++ {
		msgs = append(msgs, message(i))
	}
	return producer.SendMessages(msgs)
}

// member is one consumer of the group. It commits whenever it has handled every record it was
// given (a commit waits behind the connection's fetch long poll, so not after each record), and
// in Cleanup: a rebalance waits for Cleanup, so no record reaches two members.
type member struct {
	group    sarama.ConsumerGroup
	seen     *scenario.Seen
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	assigned int // partitions of the latest session
	count    int
	err      error
}

func startMember(seen *scenario.Seen) (scenario.Member, error) {
	g, err := sarama.NewConsumerGroup(bootstrap, group, config())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{group: g, seen: seen, cancel: cancel, done: make(chan struct{}), assigned: -1}
	go m.run(ctx)
	return m, nil
}

func (m *member) run(ctx context.Context) {
	defer close(m.done)
	for ctx.Err() == nil {
		if err := m.group.Consume(ctx, []string{topic}, m); err != nil {
			if errors.Is(err, sarama.ErrClosedConsumerGroup) {
				return
			}
			m.fail(fmt.Errorf("consume: %w", err))
			return
		}
	}
}

func (m *member) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
	}
}

func (m *member) Setup(sess sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.assigned = len(sess.Claims()[topic])
	return nil
}

func (m *member) Cleanup(sess sarama.ConsumerGroupSession) error {
	sess.Commit()
	return nil
}

func (m *member) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		m.seen.Accept(consumed(msg))
		sess.MarkMessage(msg, "")
		if len(claim.Messages()) == 0 {
			sess.Commit()
		}
		m.mu.Lock()
		m.count++
		m.mu.Unlock()
	}
	return nil
}

func (m *member) Holds() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assigned
}

func (m *member) Close() (assigned, handled int, err error) {
	m.cancel()
	closeErr := m.group.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = closeErr
	}
	return m.assigned, m.count, m.err
}

func stepCreateTopic(admin sarama.ClusterAdmin) error {
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: scenario.Partitions, ReplicationFactor: 1}, false); err != nil {
		return err
	}
	if err := admin.CreateTopic(txnTopic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		return err
	}
	described, err := admin.DescribeTopics([]string{topic})
	if err != nil {
		return err
	}
	if len(described) != 1 || !errors.Is(described[0].Err, sarama.ErrNoError) {
		return fmt.Errorf("describe topics: %v", described)
	}
	if got := len(described[0].Partitions); got != scenario.Partitions {
		return fmt.Errorf("metadata shows %d partitions, want %d", got, scenario.Partitions)
	}
	return nil
}

func stepResume(producer sarama.SyncProducer, admin sarama.ClusterAdmin) error {
	if err := produce(producer, scenario.FirstBatch, scenario.FirstBatch+scenario.SecondBatch); err != nil {
		return err
	}
	return scenario.Resume("sarama", startMember, func() error { return stepDescribeGroup(admin) })
}

// Runs while the resumed member is still in the group: one Stable member.
func stepDescribeGroup(admin sarama.ClusterAdmin) error {
	listed, err := admin.ListConsumerGroups()
	if err != nil {
		return err
	}
	if listed[group] != "consumer" {
		return fmt.Errorf("ListGroups lacks %s as a consumer group: %v", group, listed)
	}
	described, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil {
		return err
	}
	if len(described) != 1 {
		return fmt.Errorf("described %d groups", len(described))
	}
	g := described[0]
	var describeErr error
	if !errors.Is(g.Err, sarama.ErrNoError) {
		describeErr = g.Err
	}
	if err := scenario.CheckGroup(describeErr, g.State, len(g.Members), g.ProtocolType); err != nil {
		return err
	}
	offsets, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1, 2}})
	if err != nil {
		return err
	}
	var total int64
	for p := int32(0); p < scenario.Partitions; p++ {
		block := offsets.GetBlock(topic, p)
		if block == nil || !errors.Is(block.Err, sarama.ErrNoError) {
			return fmt.Errorf("committed offset of partition %d: %v", p, block)
		}
		total += block.Offset
	}
	if total != scenario.FirstBatch+scenario.SecondBatch {
		return fmt.Errorf("committed offsets add up to %d, want %d", total, scenario.FirstBatch+scenario.SecondBatch)
	}
	return nil
}

func stepTransactions() error {
	c := config()
	c.Producer.Idempotent = true
	c.Producer.Transaction.ID = "compat-sarama-txn"
	c.Net.MaxOpenRequests = 1
	producer, err := sarama.NewSyncProducer(bootstrap, c)
	if err != nil {
		return err
	}
	defer producer.Close()
	for _, b := range []struct {
		kind   string
		n      int
		commit bool
	}{{"committed", 5, true}, {"aborted", 5, false}, {"sentinel", 1, true}} {
		if err := producer.BeginTxn(); err != nil {
			return err
		}
		for i := range b.n {
			msg := &sarama.ProducerMessage{Topic: txnTopic,
				Key: sarama.StringEncoder(fmt.Sprintf("%s-%d", b.kind, i)), Value: sarama.StringEncoder(b.kind)}
			if _, _, err := producer.SendMessage(msg); err != nil {
				return fmt.Errorf("%s record %d: %w", b.kind, i, err)
			}
		}
		end := producer.CommitTxn
		if !b.commit {
			end = producer.AbortTxn
		}
		if err := end(); err != nil {
			return fmt.Errorf("ending the %s transaction: %w", b.kind, err)
		}
	}
	values, err := readCommitted()
	want := "committed committed committed committed committed sentinel"
	if err == nil && strings.Join(values, " ") != want {
		err = fmt.Errorf("read_committed saw %v", values)
	}
	return err
}

// readCommitted reads the transactional topic up to the sentinel with isolation read_committed.
func readCommitted() ([]string, error) {
	c := config()
	c.Consumer.IsolationLevel = sarama.ReadCommitted
	consumer, err := sarama.NewConsumer(bootstrap, c)
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	pc, err := consumer.ConsumePartition(txnTopic, 0, sarama.OffsetOldest)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	var values []string
	timeout := time.After(scenario.WaitTimeout)
	for {
		select {
		case msg := <-pc.Messages():
			values = append(values, string(msg.Value))
			if string(msg.Value) == "sentinel" {
				return values, nil
			}
		case err := <-pc.Errors():
			return values, fmt.Errorf("read_committed consumer: %w", err)
		case <-timeout:
			return values, fmt.Errorf("no sentinel after %s", scenario.WaitTimeout)
		}
	}
}

func stepDeleteTopics(admin sarama.ClusterAdmin) error {
	for _, t := range []string{topic, txnTopic} {
		if err := admin.DeleteTopic(t); err != nil {
			return fmt.Errorf("deleting %s: %w", t, err)
		}
	}
	// Deletion may complete after the answer (it does in Apache Kafka): wait for it.
	deadline := time.Now().Add(scenario.WaitTimeout)
	for {
		left, err := admin.ListTopics()
		if err != nil {
			return err
		}
		_, topicLeft := left[topic]
		_, txnTopicLeft := left[txnTopic]
		if !topicLeft && !txnTopicLeft {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topics still listed %s after delete", scenario.WaitTimeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func main() {
	address := os.Getenv("BOOTSTRAP")
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	if address == "" {
		fmt.Fprintln(os.Stderr, "usage: sarama-compat HOST:PORT")
		os.Exit(2)
	}
	bootstrap = []string{address}
	if v := os.Getenv("SARAMA_PROTOCOL_VERSION"); v != "" {
		parsed, err := sarama.ParseKafkaVersion(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "SARAMA_PROTOCOL_VERSION: %v\n", err)
			os.Exit(2)
		}
		version = parsed
	}
	fmt.Printf("  protocol version %s\n", version)
	scenario.ExitOn(run())
}

func run() error {
	admin, err := sarama.NewClusterAdmin(bootstrap, config())
	if err != nil {
		return err
	}
	defer admin.Close()
	producer, err := sarama.NewSyncProducer(bootstrap, config())
	if err != nil {
		return err
	}
	defer producer.Close()
	return scenario.RunSteps([]scenario.Stage{
		scenario.Do(1, "create topic", func() error { return stepCreateTopic(admin) }),
		scenario.Do(2, "produce keyed records with headers", func() error { return produce(producer, 0, scenario.FirstBatch) }),
		scenario.Do(3, "consumer group of two", func() error { return scenario.GroupOfTwo("sarama", startMember) }),
		// Step 4 reports 4 and 5 itself (5 runs while its member is still in the group).
		scenario.Do(4, "resume from committed offsets", func() error { return stepResume(producer, admin) }),
		scenario.Do(6, "transactions", stepTransactions),
		scenario.Do(7, "delete topic", func() error { return stepDeleteTopics(admin) }),
	})
}

// The client compatibility scenario (scripts/compat) with franz-go (kgo and kadm).
// Usage: go run . HOST:PORT (or BOOTSTRAP=HOST:PORT)
// Prints "STEP n name: ok" per step passed; on the first failure prints "FAIL step n name: why"
// and exits 1.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"sluice/compat/scenario"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	topic    = "compat-franz-go"
	txnTopic = "compat-franz-go-txn"
	group    = "compat-franz-go-group"
	// A short fetch long poll lets a closing consumer return quickly.
	fetchMaxWait = 500 * time.Millisecond
)

var bootstrap string

func record(i int) *kgo.Record {
	want := scenario.Want("franz-go", i)
	r := &kgo.Record{Topic: topic, Key: []byte(want.Key), Value: []byte(want.Value)}
	for _, h := range want.Headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)})
	}
	return r
}

// consumed is a consumed record in the scenario's terms.
func consumed(r *kgo.Record) scenario.Record {
	c := scenario.Record{Key: string(r.Key), Value: string(r.Value)}
	for _, h := range r.Headers {
		c.Headers = append(c.Headers, scenario.Header{Key: h.Key, Value: string(h.Value)})
	}
	return c
}

func produce(ctx context.Context, cl *kgo.Client, from, to int) error {
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		recs = append(recs, record(i))
	}
	for _, r := range cl.ProduceSync(ctx, recs...) {
		if r.Err != nil {
			return fmt.Errorf("record %s not acked: %w", r.Record.Key, r.Err)
		}
	}
	return nil
}

// member is one consumer of the group. It blocks rebalances while it handles a poll and commits
// what it handled before allowing them, so no record reaches two members.
type member struct {
	client *kgo.Client
	// The partitions of the topic it owns: cooperative rebalances (franz-go's default) hand
	// out and take back partitions a few at a time.
	mu      sync.Mutex
	owned   map[int32]bool
	started bool
	count   int
	done    chan struct{}
	pollErr error
}

func startMember(seen *scenario.Seen) (scenario.Member, error) {
	m := &member{owned: map[int32]bool{}, done: make(chan struct{})}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.change(a[topic], true)
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) {
			m.change(r[topic], false)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
			m.change(l[topic], false)
		}),
	)
	if err != nil {
		return nil, err
	}
	m.client = cl
	go m.run(seen)
	return m, nil
}

func (m *member) run(seen *scenario.Seen) {
	defer close(m.done)
	ctx := context.Background()
	for {
		fetches := m.client.PollFetches(ctx)
		if fetches.IsClientClosed() {
			return
		}
		for _, e := range fetches.Errors() {
			m.pollErr = fmt.Errorf("fetch %s/%d: %w", e.Topic, e.Partition, e.Err)
		}
		recs := fetches.Records()
		for _, r := range recs {
			seen.Accept(consumed(r))
		}
		m.count += len(recs)
		if len(recs) > 0 {
			if err := m.client.CommitRecords(ctx, recs...); err != nil {
				m.pollErr = fmt.Errorf("commit: %w", err)
			}
		}
		m.client.AllowRebalance()
	}
}

func (m *member) change(partitions []int32, owned bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.started = true
	for _, p := range partitions {
		if owned {
			m.owned[p] = true
		} else {
			delete(m.owned, p)
		}
	}
}

func (m *member) Holds() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started {
		return -1
	}
	return len(m.owned)
}

// Close reports what it owned before leaving (leaving revokes everything).
func (m *member) Close() (assigned, handled int, err error) {
	assigned = m.Holds()
	m.client.Close()
	<-m.done
	return assigned, m.count, m.pollErr
}

func stepCreateTopic(ctx context.Context, adm *kadm.Client) error {
	if err := mustCreate(adm.CreateTopics(ctx, scenario.Partitions, 1, nil, topic)); err != nil {
		return err
	}
	if err := mustCreate(adm.CreateTopics(ctx, 1, 1, nil, txnTopic)); err != nil {
		return err
	}
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return err
	}
	if got := len(details[topic].Partitions); got != scenario.Partitions {
		return fmt.Errorf("metadata shows %d partitions, want %d", got, scenario.Partitions)
	}
	return nil
}

func mustCreate(rs kadm.CreateTopicResponses, err error) error {
	if err != nil {
		return err
	}
	return rs.Error()
}

func stepResume(ctx context.Context, producer *kgo.Client, adm *kadm.Client) error {
	if err := produce(ctx, producer, scenario.FirstBatch, scenario.FirstBatch+scenario.SecondBatch); err != nil {
		return err
	}
	return scenario.Resume("franz-go", startMember, func() error { return stepDescribeGroup(ctx, adm) })
}

// Runs while the resumed member is still in the group: one Stable member.
func stepDescribeGroup(ctx context.Context, adm *kadm.Client) error {
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	if _, ok := listed[group]; !ok {
		return fmt.Errorf("ListGroups lacks %s: %v", group, listed.Groups())
	}
	described, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return err
	}
	g := described[group]
	if err := scenario.CheckGroup(g.Err, g.State, len(g.Members), g.ProtocolType); err != nil {
		return err
	}
	offsets, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = offsets.Error()
	}
	if err != nil {
		return err
	}
	var total int64
	offsets.Each(func(o kadm.OffsetResponse) { total += o.At })
	if total != scenario.FirstBatch+scenario.SecondBatch {
		return fmt.Errorf("committed offsets add up to %d, want %d", total, scenario.FirstBatch+scenario.SecondBatch)
	}
	return nil
}

func stepTransactions(ctx context.Context) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.TransactionalID("compat-franz-go-txn"),
		kgo.DefaultProduceTopic(txnTopic))
	if err != nil {
		return err
	}
	defer cl.Close()
	for _, b := range []struct {
		kind   string
		n      int
		commit kgo.TransactionEndTry
	}{{"committed", 5, kgo.TryCommit}, {"aborted", 5, kgo.TryAbort}, {"sentinel", 1, kgo.TryCommit}} {
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
		for i := range b.n {
			r := &kgo.Record{Key: []byte(fmt.Sprintf("%s-%d", b.kind, i)), Value: []byte(b.kind)}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				return fmt.Errorf("%s record %d: %w", b.kind, i, err)
			}
		}
		if err := cl.EndTransaction(ctx, b.commit); err != nil {
			return fmt.Errorf("ending the %s transaction: %w", b.kind, err)
		}
	}
	values, err := readCommitted(ctx)
	want := "committed committed committed committed committed sentinel"
	if err == nil && strings.Join(values, " ") != want {
		err = fmt.Errorf("read_committed saw %v", values)
	}
	return err
}

// readCommitted reads the transactional topic up to the sentinel with isolation read_committed.
func readCommitted(ctx context.Context) ([]string, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(txnTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(fetchMaxWait))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, scenario.WaitTimeout)
	defer cancel()
	var values []string
	for {
		fetches := cl.PollFetches(ctx)
		if err := fetches.Err0(); err != nil {
			return values, fmt.Errorf("read_committed consumer: %w", err)
		}
		for _, r := range fetches.Records() {
			values = append(values, string(r.Value))
			if string(r.Value) == "sentinel" {
				return values, nil
			}
		}
	}
}

func stepDeleteTopics(ctx context.Context, adm *kadm.Client) error {
	deleted, err := adm.DeleteTopics(ctx, topic, txnTopic)
	if err == nil {
		err = deleted.Error()
	}
	if err != nil {
		return err
	}
	// The answer means the deletion is committed; a broker that has not applied it yet (in a
	// cluster, as in Apache Kafka's) may still list the topics for a moment.
	deadline := time.Now().Add(scenario.WaitTimeout)
	for {
		left, err := adm.ListTopics(ctx)
		if err != nil {
			return err
		}
		if !left.Has(topic) && !left.Has(txnTopic) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topics still listed %s after delete: %v", scenario.WaitTimeout, left.Names())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func main() {
	bootstrap = os.Getenv("BOOTSTRAP")
	if len(os.Args) > 1 {
		bootstrap = os.Args[1]
	}
	if bootstrap == "" {
		fmt.Fprintln(os.Stderr, "usage: franz-go-compat HOST:PORT")
		os.Exit(2)
	}
	scenario.ExitOn(run())
}

func run() error {
	ctx := context.Background()
	producer, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.RecordRetries(8))
	if err != nil {
		return err
	}
	defer producer.Close()
	adm := kadm.NewClient(producer)
	return scenario.RunSteps([]scenario.Stage{
		scenario.Do(1, "create topic", func() error { return stepCreateTopic(ctx, adm) }),
		scenario.Do(2, "produce keyed records with headers", func() error { return produce(ctx, producer, 0, scenario.FirstBatch) }),
		scenario.Do(3, "consumer group of two", func() error { return scenario.GroupOfTwo("franz-go", startMember) }),
		// Step 4 reports 4 and 5 itself (5 runs while its member is still in the group).
		scenario.Do(4, "resume from committed offsets", func() error { return stepResume(ctx, producer, adm) }),
		scenario.Do(6, "transactions", func() error { return stepTransactions(ctx) }),
		scenario.Do(7, "delete topic", func() error { return stepDeleteTopics(ctx, adm) }),
	})
}

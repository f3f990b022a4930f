// The client compatibility scenario (scripts/compat) with franz-go (kgo and kadm).
// Usage: go run . HOST:PORT (or BOOTSTRAP=HOST:PORT)
// Prints "STEP n name: ok" per step passed; on the first failure prints "FAIL step n name: why"
// and exits 1.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	topic       = "compat-franz-go"
	txnTopic    = "compat-franz-go-txn"
	group       = "compat-franz-go-group"
	partitions  = 3
	firstBatch  = 100
	secondBatch = 10
	// Every wait is bounded: a hung client fails the step instead of hanging CI.
	waitTimeout = 60 * time.Second
	// After the expected records arrived, how long to watch for unexpected extra ones.
	quietPeriod = 1500 * time.Millisecond
	// A short fetch long poll lets a closing consumer return quickly.
	fetchMaxWait = 500 * time.Millisecond
)

var bootstrap string

func record(i int) *kgo.Record {
	return &kgo.Record{
		Topic: topic,
		Key:   []byte(fmt.Sprintf("key-%d", i)),
		Value: []byte(fmt.Sprintf("value-%d", i)),
		Headers: []kgo.RecordHeader{
			{Key: "index", Value: []byte(strconv.Itoa(i))},
			{Key: "client", Value: []byte("franz-go")},
		},
	}
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

// seenSet collects the records a group consumed, shared by its members.
type seenSet struct {
	mu      sync.Mutex
	indexes map[int]bool
	err     error
}

func newSeenSet() *seenSet { return &seenSet{indexes: map[int]bool{}} }

// accept checks one consumed record against what record() produced for its index.
func (s *seenSet) accept(r *kgo.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	key := string(r.Key)
	i, err := strconv.Atoi(strings.TrimPrefix(key, "key-"))
	if err != nil {
		s.err = fmt.Errorf("unexpected key %q", key)
		return
	}
	want := record(i)
	switch {
	case string(r.Value) != string(want.Value):
		s.err = fmt.Errorf("%s: value %q", key, r.Value)
	case len(r.Headers) != len(want.Headers):
		s.err = fmt.Errorf("%s: %d headers, want %d", key, len(r.Headers), len(want.Headers))
	case s.indexes[i]:
		s.err = fmt.Errorf("%s delivered twice", key)
	}
	for n, h := range want.Headers {
		if s.err == nil && (r.Headers[n].Key != h.Key || string(r.Headers[n].Value) != string(h.Value)) {
			s.err = fmt.Errorf("%s: header %d is %s=%q", key, n, r.Headers[n].Key, r.Headers[n].Value)
		}
	}
	s.indexes[i] = true
}

func (s *seenSet) has(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.indexes[i]
}

func (s *seenSet) snapshot() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.indexes), s.err
}

// waitFor polls the set until it holds n records, a check failed, or the wait times out; then
// it watches a quiet period for records that should not come.
func (s *seenSet) waitFor(n int) error {
	deadline := time.Now().Add(waitTimeout)
	for {
		got, err := s.snapshot()
		if err != nil {
			return err
		}
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("got %d records after %s, want %d", got, waitTimeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(quietPeriod)
	got, err := s.snapshot()
	if err == nil && got != n {
		err = fmt.Errorf("got %d records, want %d", got, n)
	}
	return err
}

// member is one consumer of the group. It blocks rebalances while it handles a poll and commits
// what it handled before allowing them, so no record reaches two members.
type member struct {
	client   *kgo.Client
	assigned chan int
	count    int
	done     chan struct{}
	pollErr  error
}

func startMember(seen *seenSet) (*member, error) {
	m := &member{assigned: make(chan int, 16), done: make(chan struct{})}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchMaxWait(fetchMaxWait),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
			m.assigned <- len(a[topic])
		}),
	)
	if err != nil {
		return nil, err
	}
	m.client = cl
	go m.run(seen)
	return m, nil
}

func (m *member) run(seen *seenSet) {
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
			seen.accept(r)
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

// close leaves the group and reports the last partition count it was assigned.
func (m *member) close() (lastAssigned int, err error) {
	m.client.Close()
	<-m.done
	lastAssigned = -1
	for {
		select {
		case n := <-m.assigned:
			lastAssigned = n
		default:
			return lastAssigned, m.pollErr
		}
	}
}

func stepCreateTopic(ctx context.Context, adm *kadm.Client) error {
	if err := mustCreate(adm.CreateTopics(ctx, partitions, 1, nil, topic)); err != nil {
		return err
	}
	if err := mustCreate(adm.CreateTopics(ctx, 1, 1, nil, txnTopic)); err != nil {
		return err
	}
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return err
	}
	if got := len(details[topic].Partitions); got != partitions {
		return fmt.Errorf("metadata shows %d partitions, want %d", got, partitions)
	}
	return nil
}

func mustCreate(rs kadm.CreateTopicResponses, err error) error {
	if err != nil {
		return err
	}
	return rs.Error()
}

func stepGroupOfTwo() error {
	seen := newSeenSet()
	var members []*member
	for range 2 {
		m, err := startMember(seen)
		if err != nil {
			return err
		}
		members = append(members, m)
	}
	waitErr := seen.waitFor(firstBatch)
	var counts []string
	for n, m := range members {
		last, err := m.close()
		if waitErr == nil && err != nil {
			waitErr = fmt.Errorf("member %d: %w", n, err)
		}
		if waitErr == nil && last <= 0 {
			waitErr = fmt.Errorf("member %d ended with %d partitions", n, last)
		}
		counts = append(counts, strconv.Itoa(m.count))
	}
	if waitErr == nil {
		fmt.Printf("  group of two: members got %s records\n", strings.Join(counts, " and "))
	}
	return waitErr
}

func stepResume(ctx context.Context, producer *kgo.Client, adm *kadm.Client) error {
	if err := produce(ctx, producer, firstBatch, firstBatch+secondBatch); err != nil {
		return err
	}
	seen := newSeenSet()
	m, err := startMember(seen)
	if err != nil {
		return err
	}
	err = seen.waitFor(secondBatch)
	if err == nil {
		for i := range firstBatch {
			if seen.has(i) {
				err = fmt.Errorf("resumed consumer got already-committed record key-%d", i)
				break
			}
		}
	}
	if err == nil {
		pass(4, "resume from committed offsets")
		current = stepName{5, "list and describe group"}
		if err = stepDescribeGroup(ctx, adm); err == nil {
			pass(5, "list and describe group")
		}
	}
	if _, closeErr := m.close(); err == nil {
		err = closeErr
	}
	return err
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
	switch {
	case g.Err != nil:
		return fmt.Errorf("describe: %w", g.Err)
	case g.State != "Stable":
		return fmt.Errorf("group state %s, want Stable", g.State)
	case len(g.Members) != 1:
		return fmt.Errorf("group has %d members, want 1", len(g.Members))
	case g.ProtocolType != "consumer":
		return fmt.Errorf("protocol type %q", g.ProtocolType)
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
	if total != firstBatch+secondBatch {
		return fmt.Errorf("committed offsets add up to %d, want %d", total, firstBatch+secondBatch)
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
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
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
	left, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	if left.Has(topic) || left.Has(txnTopic) {
		return fmt.Errorf("topics still listed after delete: %v", left.Names())
	}
	return nil
}

type stepName struct {
	n    int
	name string
}

var (
	current   stepName
	stepStart = time.Now()
)

func pass(n int, name string) {
	fmt.Printf("STEP %d %s: ok (%d ms)\n", n, name, time.Since(stepStart).Milliseconds())
	stepStart = time.Now()
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
	if err := run(); err != nil {
		fmt.Printf("FAIL step %d %s: %v\n", current.n, current.name, err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	producer, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.RecordRetries(8))
	if err != nil {
		return err
	}
	defer producer.Close()
	adm := kadm.NewClient(producer)
	steps := []struct {
		stepName
		run func() error
	}{
		{stepName{1, "create topic"}, func() error { return stepCreateTopic(ctx, adm) }},
		{stepName{2, "produce keyed records with headers"}, func() error { return produce(ctx, producer, 0, firstBatch) }},
		{stepName{3, "consumer group of two"}, stepGroupOfTwo},
		// Step 4 reports 4 and 5 itself (5 runs while its member is still in the group).
		{stepName{4, "resume from committed offsets"}, func() error { return stepResume(ctx, producer, adm) }},
		{stepName{6, "transactions"}, func() error { return stepTransactions(ctx) }},
		{stepName{7, "delete topic"}, func() error { return stepDeleteTopics(ctx, adm) }},
	}
	for _, s := range steps {
		current = s.stepName
		if err := s.run(); err != nil {
			return err
		}
		if s.n != 4 {
			pass(s.n, s.name)
		}
	}
	return nil
}

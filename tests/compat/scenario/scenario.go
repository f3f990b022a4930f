// Package scenario is what the Go clients' compatibility scenarios (tests/compat/franz-go,
// tests/compat/sarama) share: the records they produce and check, the set of records a
// consumer group saw, and the "STEP n name: ok" lines scripts/compat counts.
package scenario

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	Partitions  = 3
	FirstBatch  = 100
	SecondBatch = 10
	// Every wait is bounded: a hung client fails the step instead of hanging CI.
	WaitTimeout = 60 * time.Second
	// After the expected records arrived, how long to watch for unexpected extra ones.
	QuietPeriod = 1500 * time.Millisecond
)

type Header struct{ Key, Value string }

// Record is a record as a client produced or consumed it, in the clients' common terms.
type Record struct {
	Key, Value string
	Headers    []Header
}

// Want is the record number i that client produces.
func Want(client string, i int) Record {
	return Record{
		Key:     fmt.Sprintf("key-%d", i),
		Value:   fmt.Sprintf("value-%d", i),
		Headers: []Header{{"index", strconv.Itoa(i)}, {"client", client}},
	}
}

// Seen collects the records a group consumed, shared by its members.
type Seen struct {
	client  string
	mu      sync.Mutex
	indexes map[int]bool
	err     error
}

func NewSeen(client string) *Seen { return &Seen{client: client, indexes: map[int]bool{}} }

// Accept checks one consumed record against what Want produced for its index.
func (s *Seen) Accept(r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	i, err := strconv.Atoi(strings.TrimPrefix(r.Key, "key-"))
	if err != nil {
		s.err = fmt.Errorf("unexpected key %q", r.Key)
		return
	}
	want := Want(s.client, i)
	switch {
	case r.Value != want.Value:
		s.err = fmt.Errorf("%s: value %q", r.Key, r.Value)
	case len(r.Headers) != len(want.Headers):
		s.err = fmt.Errorf("%s: %d headers, want %d", r.Key, len(r.Headers), len(want.Headers))
	case s.indexes[i]:
		s.err = fmt.Errorf("%s delivered twice", r.Key)
	}
	for n, h := range want.Headers {
		if s.err == nil && r.Headers[n] != h {
			s.err = fmt.Errorf("%s: header %d is %s=%q", r.Key, n, r.Headers[n].Key, r.Headers[n].Value)
		}
	}
	s.indexes[i] = true
}

func (s *Seen) Has(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.indexes[i]
}

func (s *Seen) snapshot() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.indexes), s.err
}

// WaitFor polls the set until it holds n records, a check failed, or the wait times out; then
// it watches a quiet period for records that should not come.
func (s *Seen) WaitFor(n int) error {
	deadline := time.Now().Add(WaitTimeout)
	for {
		got, err := s.snapshot()
		if err != nil {
			return err
		}
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("got %d records after %s, want %d", got, WaitTimeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(QuietPeriod)
	got, err := s.snapshot()
	if err == nil && got != n {
		err = fmt.Errorf("got %d records, want %d", got, n)
	}
	return err
}

// Step names a scenario step; Current is the one running, for the failure line.
type Step struct {
	N    int
	Name string
}

var (
	Current   Step
	stepStart = time.Now()
)

// Pass prints the line scripts/compat counts for a step that passed.
func Pass(n int, name string) {
	fmt.Printf("STEP %d %s: ok (%d ms)\n", n, name, time.Since(stepStart).Milliseconds())
	stepStart = time.Now()
}

// Member is one consumer of the scenario's group, started by a client's program.
type Member interface {
	// Holds is how many partitions of the topic the member owns now (-1 before its first
	// assignment).
	Holds() int
	// Close leaves the group and reports the partition count it owned last, the records it
	// handled, and its first error.
	Close() (assigned, handled int, err error)
}

// Start starts a member of the group that adds what it consumes to seen.
type Start func(seen *Seen) (Member, error)

// GroupOfTwo is step 3: two members share the first batch exactly once, and each ends with
// partitions.
func GroupOfTwo(client string, start Start) error {
	seen := NewSeen(client)
	var members []Member
	for range 2 {
		m, err := start(seen)
		if err != nil {
			return err
		}
		members = append(members, m)
	}
	waitErr := seen.WaitFor(FirstBatch)
	if waitErr == nil {
		// The first member may read the whole batch before the second has joined: the group
		// settles (both own partitions) before they leave.
		waitErr = bothHold(members)
	}
	var counts []string
	for n, m := range members {
		assigned, handled, err := m.Close()
		if waitErr == nil && err != nil {
			waitErr = fmt.Errorf("member %d: %w", n, err)
		}
		if waitErr == nil && assigned <= 0 {
			waitErr = fmt.Errorf("member %d ended with %d partitions", n, assigned)
		}
		counts = append(counts, strconv.Itoa(handled))
	}
	if waitErr == nil {
		fmt.Printf("  group of two: members got %s records\n", strings.Join(counts, " and "))
	}
	return waitErr
}

// bothHold waits until every member owns partitions, for at most WaitTimeout.
func bothHold(members []Member) error {
	deadline := time.Now().Add(WaitTimeout)
	for {
		settled := true
		for _, m := range members {
			settled = settled && m.Holds() > 0
		}
		if settled {
			return nil
		}
		if time.Now().After(deadline) {
			var held []string
			for _, m := range members {
				held = append(held, strconv.Itoa(m.Holds()))
			}
			return fmt.Errorf("members own %s partitions after %s", strings.Join(held, " and "), WaitTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Resume is steps 4 and 5, once the caller produced the second batch: a new member gets exactly
// that batch, and step 5 (describe) runs while it is still in the group.
func Resume(client string, start Start, describe func() error) error {
	seen := NewSeen(client)
	m, err := start(seen)
	if err != nil {
		return err
	}
	err = seen.WaitFor(SecondBatch)
	for i := 0; err == nil && i < FirstBatch; i++ {
		if seen.Has(i) {
			err = fmt.Errorf("resumed consumer got already-committed record key-%d", i)
		}
	}
	if err == nil {
		Pass(4, "resume from committed offsets")
		Current = Step{N: 5, Name: "list and describe group"}
		if err = describe(); err == nil {
			Pass(5, "list and describe group")
		}
	}
	if _, _, closeErr := m.Close(); err == nil {
		err = closeErr
	}
	return err
}

// Stage is a step and what runs it.
type Stage struct {
	Step
	Run func() error
}

// RunSteps runs the stages in order and reports each one that passed, stopping at the first
// failure. Step 4 reports itself and step 5 (see Resume).
func RunSteps(stages []Stage) error {
	for _, s := range stages {
		Current = s.Step
		if err := s.Run(); err != nil {
			return err
		}
		if s.N != 4 {
			Pass(s.N, s.Name)
		}
	}
	return nil
}

// ExitOn prints the failure line scripts/compat reads and exits 1 when err is not nil.
func ExitOn(err error) {
	if err != nil {
		fmt.Printf("FAIL step %d %s: %v\n", Current.N, Current.Name, err)
		os.Exit(1)
	}
}

// Do is the stage that runs step n with run.
func Do(n int, name string, run func() error) Stage {
	return Stage{Step: Step{N: n, Name: name}, Run: run}
}

// CheckGroup is step 5's check of a described group: no error, Stable, one member, a consumer
// group.
func CheckGroup(err error, state string, members int, protocolType string) error {
	switch {
	case err != nil:
		return fmt.Errorf("describe: %w", err)
	case state != "Stable":
		return fmt.Errorf("group state %s, want Stable", state)
	case members != 1:
		return fmt.Errorf("group has %d members, want 1", members)
	case protocolType != "consumer":
		return fmt.Errorf("protocol type %q", protocolType)
	}
	return nil
}

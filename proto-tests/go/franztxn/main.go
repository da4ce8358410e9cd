// franztxn: franz-go's (github.com/twmb/franz-go) transactional consume-transform-produce loop
// for the transaction proto-tests (issue 14). A kgo.GroupTransactSession in group -group reads
// -input with read_committed and, for each poll of up to 20 records, begins a transaction,
// produces every record to the same partition of -output with the value "out-<input value>",
// and ends the transaction: every -abort-every'th one with TryAbort after a flush, so that its
// records are on the log (the session then rewinds to the group's committed offsets, so those
// records are processed again), the others with TryCommit (the consumed offsets are committed
// inside the transaction with TxnOffsetCommit). It stops once -expect input records have been
// processed in committed transactions, then reads -output back from offset 0 with a
// read_committed and a read_uncommitted client (up to a record "END" that it appends to each
// partition afterwards, without a transaction), and prints one JSON line:
//
//	{"transactions": 9, "committed": 6, "aborted": 3, "processed": 300, "error": "",
//	 "read_committed": ["out-v0", ...], "read_uncommitted": ["out-v0", ...]}
//
// Errors are reported in "error", not fatal. Built by scripts/install-test-deps.sh into
// .deps/bin/franz-txn.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type report struct {
	Transactions    int      `json:"transactions"`
	Committed       int      `json:"committed"`
	Aborted         int      `json:"aborted"`
	Processed       int      `json:"processed"`
	Error           string   `json:"error"`
	ReadCommitted   []string `json:"read_committed"`
	ReadUncommitted []string `json:"read_uncommitted"`
}

func main() {
	brokers := flag.String("brokers", "", "bootstrap servers, comma-separated")
	group := flag.String("group", "", "consumer group")
	input := flag.String("input", "", "input topic")
	output := flag.String("output", "", "output topic")
	partitions := flag.Int("partitions", 1, "partitions of the output topic")
	txnID := flag.String("txn-id", "", "transactional id")
	expect := flag.Int("expect", 0, "input records to process in committed transactions")
	abortEvery := flag.Int("abort-every", 3, "abort every n-th transaction")
	timeout := flag.Duration("timeout", 90*time.Second, "for the whole loop")
	flag.Parse()

	rep := report{ReadCommitted: []string{}, ReadUncommitted: []string{}}
	seeds := strings.Split(*brokers, ",")
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	err := transform(ctx, &rep, seeds, *group, *input, *output, *txnID, *expect, *abortEvery)
	if err != nil {
		rep.Error = err.Error()
	} else {
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		if err := markEnd(rctx, seeds, *output, *partitions); err != nil {
			rep.Error = "END marks: " + err.Error()
		} else if rep.ReadCommitted, err = readAll(rctx, seeds, *output, *partitions, kgo.ReadCommitted()); err != nil {
			rep.Error = "read_committed: " + err.Error()
		} else if rep.ReadUncommitted, err = readAll(rctx, seeds, *output, *partitions, kgo.ReadUncommitted()); err != nil {
			rep.Error = "read_uncommitted: " + err.Error()
		}
	}
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
}

func transform(ctx context.Context, rep *report, seeds []string, group, input, output, txnID string,
	expect, abortEvery int) error {
	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(seeds...),
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(30*time.Second),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(input),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequireStableFetchOffsets(),
		kgo.SessionTimeout(10*time.Second),
	)
	if err != nil {
		return err
	}
	defer sess.Close()

	for rep.Processed < expect {
		if ctx.Err() != nil {
			return fmt.Errorf("processed %d of %d records: %w", rep.Processed, expect, ctx.Err())
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		fetches := sess.PollRecords(pctx, 20)
		pcancel()
		if errs := fetches.Errors(); len(errs) > 0 {
			for _, fe := range errs {
				if !errors.Is(fe.Err, context.DeadlineExceeded) && !errors.Is(fe.Err, context.Canceled) {
					return fmt.Errorf("fetch %s/%d: %w", fe.Topic, fe.Partition, fe.Err)
				}
			}
		}
		var records []*kgo.Record
		fetches.EachRecord(func(r *kgo.Record) { records = append(records, r) })
		if len(records) == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		rep.Transactions++
		abort := rep.Transactions%abortEvery == 0
		var produceErr error
		for _, r := range records {
			out := &kgo.Record{Topic: output, Partition: r.Partition, Key: r.Key,
				Value: append([]byte("out-"), r.Value...)}
			sess.Produce(ctx, out, func(_ *kgo.Record, err error) {
				if err != nil && produceErr == nil {
					produceErr = err
				}
			})
		}
		end := kgo.TryCommit
		if abort {
			end = kgo.TryAbort
			// on the log first, so that the abort has records to abort (TryAbort drops
			// what is still buffered)
			if err := sess.Client().Flush(ctx); err != nil {
				return fmt.Errorf("flush before abort: %w", err)
			}
		}
		committed, err := sess.End(ctx, end)
		if err != nil {
			return fmt.Errorf("end transaction %d: %w", rep.Transactions, err)
		}
		if committed {
			if produceErr != nil {
				return fmt.Errorf("transaction %d committed although a produce failed: %w",
					rep.Transactions, produceErr)
			}
			rep.Committed++
			rep.Processed += len(records)
		} else {
			rep.Aborted++
			if !abort {
				return fmt.Errorf("transaction %d aborted instead of committing (produce error: %v)",
					rep.Transactions, produceErr)
			}
		}
	}
	return nil
}

// markEnd appends the record "END" to every partition of topic, with a plain (idempotent,
// non-transactional) producer, after the transactions: a reader that has seen it in a partition
// has read everything before it.
func markEnd(ctx context.Context, seeds []string, topic string, partitions int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return err
	}
	defer cl.Close()
	for p := 0; p < partitions; p++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: int32(p), Value: []byte(endMark)}).FirstErr(); err != nil {
			return fmt.Errorf("END to partition %d: %w", p, err)
		}
	}
	return nil
}

const endMark = "END"

// readAll reads every partition of topic from offset 0 up to its END record at the given
// isolation level (read_committed sees END only once the transactions before it completed).
func readAll(ctx context.Context, seeds []string, topic string, partitions int,
	level kgo.IsolationLevel) ([]string, error) {
	offsets := map[int32]kgo.Offset{}
	pending := map[int32]bool{}
	for p := 0; p < partitions; p++ {
		offsets[int32(p)] = kgo.NewOffset().AtStart()
		pending[int32(p)] = true
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(seeds...),
		kgo.FetchIsolationLevel(level),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	values := []string{}
	for len(pending) > 0 {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return values, fmt.Errorf("no END seen in partitions %v: %w", pending, ctx.Err())
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return values, fmt.Errorf("fetch %s/%d: %w", errs[0].Topic, errs[0].Partition, errs[0].Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == endMark {
				delete(pending, r.Partition)
			} else {
				values = append(values, string(r.Value))
			}
		})
	}
	return values, nil
}

// Command franzfetch consumes every partition of a topic from the start with franz-go (its
// newest Fetch version, with incremental fetch sessions unless -no-sessions), optionally as a
// rack-aware consumer (-rack, KIP-392), and prints a JSON report. It stops after -n records,
// or with -for polls that long whatever arrives (the fetch session benchmark's consumer).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type report struct {
	Consumed int    `json:"consumed"`
	InOrder  bool   `json:"in_order"`
	Polls    int    `json:"polls"`
	Error    string `json:"error,omitempty"`
}

func main() {
	brokers := flag.String("brokers", "", "bootstrap servers, comma-separated")
	topic := flag.String("topic", "", "topic")
	partitions := flag.Int("partitions", 1, "partitions of the topic, all consumed")
	n := flag.Int("n", 0, "stop after this many records")
	rack := flag.String("rack", "", "the consumer's rack (client.rack)")
	noSessions := flag.Bool("no-sessions", false, "full fetches only (no KIP-227 sessions)")
	poll := flag.Duration("for", 0, "poll this long instead of stopping after -n records")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()

	offsets := map[int32]kgo.Offset{}
	for p := 0; p < *partitions; p++ {
		offsets[int32(p)] = kgo.NewOffset().AtStart()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(*brokers, ",")...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{*topic: offsets}),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
	if *rack != "" {
		opts = append(opts, kgo.Rack(*rack))
	}
	if *noSessions {
		opts = append(opts, kgo.DisableFetchSessions())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "franzfetch:", err)
		os.Exit(2)
	}
	defer cl.Close()
	limit := *timeout
	if *poll > 0 {
		limit = *poll
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()

	rep := report{InOrder: true}
	next := map[int32]int64{}
	for ctx.Err() == nil && (*poll > 0 || rep.Consumed < *n) {
		fs := cl.PollFetches(ctx)
		rep.Polls++
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && rep.Error == "" {
				rep.Error = fmt.Sprintf("%s-%d: %v", t, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset != next[r.Partition] {
				rep.InOrder = false
			}
			next[r.Partition] = r.Offset + 1
			rep.Consumed++
		})
		if rep.Error != "" {
			break
		}
	}
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
}

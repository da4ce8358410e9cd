// franz848: franz-go's (github.com/twmb/franz-go) KIP-848 consumer groups (kgo.ServerSideBalancer)
// for the consumer protocol proto-tests (issue 15). Two clients in group -group, with the range
// balancer (server assignor "range"), read -topic until they have -expect records between them
// (committing before partitions are revoked, so none is read twice), and print one JSON line:
//
//	{"records": 40, "duplicates": 0, "assigned": [[0, 1], [2, 3]], "error": ""}
//
// Errors are reported in "error", not fatal. Built by scripts/install-test-deps.sh into
// .deps/bin/franz-848.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type report struct {
	Records    int     `json:"records"`
	Duplicates int     `json:"duplicates"`
	Assigned   [][]int `json:"assigned"`
	Error      string  `json:"error"`
}

func main() {
	brokers := flag.String("brokers", "", "bootstrap servers, comma-separated")
	group := flag.String("group", "", "consumer group")
	topic := flag.String("topic", "", "topic")
	expect := flag.Int("expect", 0, "records to read")
	timeout := flag.Duration("timeout", 60*time.Second, "for the whole run")
	flag.Parse()

	rep := report{Assigned: [][]int{}}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var mu sync.Mutex
	owned := make([]map[int32]bool, 2)
	clients := make([]*kgo.Client, 2)
	for i := range clients {
		i := i
		owned[i] = map[int32]bool{}
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(strings.Split(*brokers, ",")...),
			kgo.ConsumerGroup(*group),
			kgo.ConsumeTopics(*topic),
			kgo.Balancers(kgo.RangeBalancer()),
			kgo.ServerSideBalancer(),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.DisableAutoCommit(),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range m[*topic] {
					owned[i][p] = true
				}
			}),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
				// Commit what was read before the partitions move on (the usual pattern).
				if err := cl.CommitUncommittedOffsets(ctx); err != nil {
					mu.Lock()
					rep.Error = "commit on revoke: " + err.Error()
					mu.Unlock()
				}
				mu.Lock()
				defer mu.Unlock()
				for _, p := range m[*topic] {
					delete(owned[i], p)
				}
			}),
		)
		if err != nil {
			rep.Error = err.Error()
			emit(rep)
			return
		}
		clients[i] = cl
	}
	seen := map[string]int{}
	balanced := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(owned[0]) > 0 && len(owned[1]) > 0
	}
	for (len(seen) < *expect || !balanced()) && ctx.Err() == nil {
		for _, cl := range clients {
			pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			fs := cl.PollFetches(pctx)
			pcancel()
			fs.EachRecord(func(r *kgo.Record) {
				seen[string(r.Value)]++
			})
		}
	}
	for _, n := range seen {
		rep.Records++
		if n > 1 {
			rep.Duplicates += n - 1
		}
	}
	mu.Lock()
	for i := range owned {
		ps := []int{}
		for p := range owned[i] {
			ps = append(ps, int(p))
		}
		sort.Ints(ps)
		rep.Assigned = append(rep.Assigned, ps)
	}
	mu.Unlock()
	if ctx.Err() != nil {
		rep.Error = fmt.Sprintf("timed out: %d of %d records, assigned %v", len(seen), *expect, rep.Assigned)
	}
	for _, cl := range clients {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := cl.CommitUncommittedOffsets(cctx); err != nil && rep.Error == "" {
			rep.Error = "commit: " + err.Error()
		}
		ccancel()
		cl.Close()
	}
	emit(rep)
}

func emit(rep report) {
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
}

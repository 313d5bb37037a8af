// Package lincheck checks client-observed histories of a string key-value
// store (GET, SET, APPEND) for linearizability with porcupine.
//
// Histories follow the conventions of etcd's robustness tests: a failed read
// tells nothing and is dropped; a write that failed with a definite error is
// dropped, since it did not take effect; a write whose outcome is unknown
// (-TIMEOUT, connection lost after sending, deadline exceeded) may have taken
// effect at any time after it was invoked, so it is kept with its return
// time moved to the end of history and any output accepted.
package lincheck

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kind is the operation type.
type Kind uint8

const (
	Get    Kind = iota // GET key
	Put                // SET key value
	Append             // APPEND key value
)

func (k Kind) String() string {
	switch k {
	case Get:
		return "get"
	case Put:
		return "put"
	case Append:
		return "append"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Input is an operation's request.
type Input struct {
	Kind  Kind
	Key   string
	Value string // Put and Append argument
}

// Output is an operation's observed result. An absent key reads as "", so
// histories should write only non-empty values.
type Output struct {
	Value   string // Get result
	Length  int64  // Append result: the length of the value after appending
	Unknown bool   // the outcome is unknown: any result is acceptable
}

// Outcome classifies how an operation ended.
type Outcome int

const (
	OK      Outcome = iota // the server acknowledged it
	Failed                 // it certainly did not take effect
	Unknown                // it may or may not have taken effect
)

// Classify maps a client error to an Outcome. Replies that the server sent
// as errors mean the command was not executed, except -TIMEOUT, which the
// proxy sends when a proposed write's fate is unknown. A connection that
// could not even be dialled never carried the command. Anything else
// (deadline, reset, EOF, an unrecognised error) may have lost the reply of a
// command that was applied, so it is Unknown: wrongly dropping a write that
// did happen would make a correct system look broken.
func Classify(err error) Outcome {
	if err == nil {
		return OK
	}
	if strings.HasPrefix(err.Error(), "TIMEOUT") {
		return Unknown
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return Unknown
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return Failed
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return Unknown
	}
	// go-redis marks error replies from the server with this method.
	var re interface{ RedisError() }
	if errors.As(err, &re) {
		return Failed
	}
	return Unknown
}

// Op is one operation as a client saw it. Call and Return are timestamps
// from one monotonic clock shared by all clients.
type Op struct {
	ClientID int
	Input    Input
	Call     int64
	Return   int64
	Output   Output
	Err      error
}

// History collects operations from concurrent clients.
type History struct {
	mu      sync.Mutex
	ops     []porcupine.Operation
	dropped int
	unknown int
}

// Add records op, dropping or extending it according to its error.
func (h *History) Add(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	outcome := Classify(op.Err)
	if op.Input.Kind == Get && outcome != OK {
		h.dropped++
		return
	}
	switch outcome {
	case Failed:
		h.dropped++
		return
	case Unknown:
		h.unknown++
		op.Return = math.MaxInt64
		op.Output = Output{Unknown: true}
	}
	h.ops = append(h.ops, porcupine.Operation{
		ClientId: op.ClientID,
		Input:    op.Input,
		Call:     op.Call,
		Output:   op.Output,
		Return:   op.Return,
	})
}

// Operations returns the recorded history.
func (h *History) Operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// Stats reports how many operations were kept (unknown ones included), how
// many of those had an unknown outcome, and how many were dropped.
func (h *History) Stats() (kept, unknown, dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops), h.unknown, h.dropped
}

// Model is the sequential specification of one key: the state is the key's
// value, "" when absent.
var Model = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s := state.(string)
		in := input.(Input)
		out := output.(Output)
		switch in.Kind {
		case Get:
			return out.Unknown || out.Value == s, s
		case Put:
			return true, in.Value
		case Append:
			ns := s + in.Value
			return out.Unknown || out.Length == int64(len(ns)), ns
		}
		return false, s
	},
	Hash: func(state interface{}) uint64 {
		h := fnv.New64a()
		h.Write([]byte(state.(string)))
		return h.Sum64()
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(Input)
		out := output.(Output)
		res := "?"
		switch {
		case out.Unknown:
		case in.Kind == Get:
			res = short(out.Value)
		case in.Kind == Put:
			res = "OK"
		case in.Kind == Append:
			res = strconv.FormatInt(out.Length, 10)
		}
		if in.Kind == Get {
			return fmt.Sprintf("get(%s) -> %s", in.Key, res)
		}
		return fmt.Sprintf("%s(%s, %s) -> %s", in.Kind, in.Key, short(in.Value), res)
	},
	DescribeState: func(state interface{}) string { return short(state.(string)) },
}

// short keeps visualizations readable once appends have grown a value.
func short(s string) string {
	if len(s) > 48 {
		return strconv.Quote("…" + s[len(s)-47:])
	}
	return strconv.Quote(s)
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range history {
		k := op.Input.(Input).Key
		byKey[k] = append(byKey[k], op)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out
}

// Check reports whether history is linearizable. It returns an error when it
// is not, naming an HTML visualization written under os.TempDir(), and when
// the checker ran out of time, since an unknown verdict proves nothing.
func Check(history []porcupine.Operation, timeout time.Duration) (porcupine.CheckResult, error) {
	res := porcupine.CheckOperationsTimeout(Model, history, timeout)
	switch res {
	case porcupine.Ok:
		return res, nil
	case porcupine.Unknown:
		return res, fmt.Errorf("linearizability check of %d operations gave no verdict within %v", len(history), timeout)
	}
	// The verbose check is slower, so it runs only to explain a failure.
	_, info := porcupine.CheckOperationsVerbose(Model, history, timeout)
	f, err := os.CreateTemp("", "lincheck-*.html")
	if err != nil {
		return res, fmt.Errorf("history of %d operations is not linearizable (no visualization: %w)", len(history), err)
	}
	defer f.Close()
	if err := porcupine.Visualize(Model, info, f); err != nil {
		return res, fmt.Errorf("history of %d operations is not linearizable (writing visualization %s: %w)", len(history), f.Name(), err)
	}
	return res, fmt.Errorf("history of %d operations is not linearizable; visualization: %s", len(history), f.Name())
}

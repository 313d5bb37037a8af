package raftnode

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// raftLogger adapts slog to the raft library's Logger interface.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)              { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.l.Info(fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.l.Info(fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.l.Warn(fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.l.Error(fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { r.l.Error(fmt.Sprint(v...)); os.Exit(1) }
func (r raftLogger) Fatalf(f string, v ...any)   { r.l.Error(fmt.Sprintf(f, v...)); os.Exit(1) }
func (r raftLogger) Panic(v ...any)              { panic(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any)   { panic(fmt.Sprintf(f, v...)) }

// zapToSlog makes the etcd packages (WAL, transport), which log through zap,
// write into the same slog handler as the rest of the program.
func zapToSlog(l *slog.Logger) *zap.Logger {
	return zap.New(&slogCore{l: l})
}

// zapToSlogCalm is zapToSlog for a node's transport: while calm reports
// true (the node let go of its peers on purpose, quiesce.go), the warnings
// rafthttp gives as streams to peers close and open again go to debug,
// since they are no trouble then.
func zapToSlogCalm(l *slog.Logger, calm func() bool) *zap.Logger {
	return zap.New(&slogCore{l: l, calm: calm})
}

// churnWarnings are rafthttp's warnings about its streams closing or not
// being there: a sign of trouble, except while peers are detached.
var churnWarnings = map[string]bool{
	"lost TCP streaming connection with remote peer":     true,
	"closed TCP streaming connection with remote peer":   true,
	"peer became inactive (message send to peer failed)": true,
	"failed to find remote peer in cluster":              true,
	"failed to dial remote peer":                         true,
}

type slogCore struct {
	l     *slog.Logger
	attrs []slog.Attr
	calm  func() bool
}

// level is what e is logged at.
func (c *slogCore) level(e zapcore.Entry) slog.Level {
	if c.calm != nil && e.Level == zapcore.WarnLevel && churnWarnings[e.Message] && c.calm() {
		return slog.LevelDebug
	}
	return zapLevel(e.Level)
}

func (c *slogCore) Enabled(lvl zapcore.Level) bool {
	return c.l.Enabled(context.Background(), zapLevel(lvl))
}

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{l: c.l, attrs: append(append([]slog.Attr{}, c.attrs...), fieldsToAttrs(fs)...), calm: c.calm}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.l.Enabled(context.Background(), c.level(e)) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	attrs := append(append([]slog.Attr{}, c.attrs...), fieldsToAttrs(fs)...)
	c.l.LogAttrs(context.Background(), c.level(e), e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func zapLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		// etcd's transport and WAL are chatty at info; keep them at debug so
		// an operator's info log shows raftproxy's own events.
		return slog.LevelDebug
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func fieldsToAttrs(fs []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	return attrs
}

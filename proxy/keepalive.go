package proxy

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// Close code for sessions ended by a limit: the client did nothing wrong
// on the wire, but policy ends the session.
const closePolicy = websocket.ClosePolicyViolation

// touch records data traffic either way; pings do not count.
func (ss *session) touch() { ss.lastActivity.Store(time.Now().UnixNano()) }

// extendReadDeadline gives the client two ping periods to show life. It
// runs for every message read: the deadline is moved only when it has
// fallen a quarter period behind, as re-arming the runtime's timer costs
// more than reading a keystroke.
func (ss *session) extendReadDeadline() {
	p := ss.cfg.PingInterval
	if p <= 0 {
		return
	}
	now := time.Now()
	if now.UnixNano()-ss.readExtended.Load() < int64(p/4) {
		return
	}
	ss.readExtended.Store(now.UnixNano())
	_ = ss.conn.SetReadDeadline(now.Add(2 * p))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// startTimers arms the session's lifetime, idle and ping timers. They run
// as timers, not goroutines, so an idle session costs no stack.
func (ss *session) startTimers() (stop func()) {
	cfg := ss.cfg
	var timers []*time.Timer
	if cfg.MaxLifetime > 0 {
		timers = append(timers, time.AfterFunc(cfg.MaxLifetime, func() {
			ss.terminate("max_lifetime", closePolicy, fmt.Sprintf("session closed: it reached the maximum lifetime of %v", cfg.MaxLifetime))
		}))
	}
	if cfg.IdleTimeout > 0 {
		var idle *time.Timer
		idle = time.AfterFunc(cfg.IdleTimeout, func() {
			quiet := time.Since(time.Unix(0, ss.lastActivity.Load()))
			if quiet >= cfg.IdleTimeout {
				ss.terminate("idle_timeout", closePolicy, fmt.Sprintf("session closed: no input or output for %v", cfg.IdleTimeout))
				return
			}
			idle.Reset(cfg.IdleTimeout - quiet)
		})
		timers = append(timers, idle)
	}
	if cfg.PingInterval > 0 && ss.res == nil { // a resumable session pings each connection (resume.go)
		timers = append(timers, ss.armPings(ss.conn, func() {
			// The client's connection is broken (or takes no byte for
			// WriteTimeout): the only sign of a vanished client while the
			// read loop waits for a process to take stdin.
			ss.setEndReason("client_gone")
			ss.clientGone()
		}))
	}
	return func() {
		for _, t := range timers {
			t.Stop()
		}
	}
}

// armPings answers the client's pings, extends the read deadline on its
// pongs and pings conn every PingInterval until the session ends; a ping
// that cannot be written (other than after our close) calls broken once.
func (ss *session) armPings(conn *websocket.Conn, broken func()) *time.Timer {
	cfg := ss.cfg
	ss.extendReadDeadline()
	conn.SetPongHandler(func(string) error { ss.extendReadDeadline(); return nil })
	conn.SetPingHandler(func(data string) error {
		ss.extendReadDeadline()
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(cfg.WriteTimeout))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) && !isTimeout(err) {
			return err
		}
		return nil
	})
	var ping *time.Timer
	ping = time.AfterFunc(cfg.PingInterval, func() {
		if ss.ctx.Err() != nil {
			return
		}
		if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(cfg.WriteTimeout)); err != nil {
			if !errors.Is(err, websocket.ErrCloseSent) {
				broken()
			}
			return
		}
		ping.Reset(cfg.PingInterval)
	})
	return ping
}

// Package background runs a server's blocking loop for the length of a
// test: the store's and the proxy's tests start one in almost every setup.
package background

import (
	"context"
	"sync"
	"testing"
)

// Serve starts run in a goroutine and returns stop, which cancels run's
// context, waits for it to return and reports its error on t. stop also
// runs when t ends; it does its work once, whoever calls it first.
func Serve(t testing.TB, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

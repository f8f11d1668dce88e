package limits

import (
	"errors"
	"testing"
)

func TestSearch(t *testing.T) {
	refuse := errors.New("refused")
	upTo := func(limit int) func(int) error {
		return func(n int) error {
			if n > limit {
				return refuse
			}
			return nil
		}
	}
	for _, c := range []struct {
		lo, hi, limit, best, refused int
	}{
		{1, 100, 37, 37, 38},
		{1, 100, 1, 1, 2},
		{1, 100, 99, 99, 100},
		{1, 30, 37, 30, 0}, // nothing refused: the value is a lower bound
		{0, 5, 3, 3, 4},
	} {
		f, err := Search(c.lo, c.hi, upTo(c.limit))
		if err != nil || f.Best != c.best || f.Refused != c.refused {
			t.Errorf("Search(%d, %d) with limit %d = %+v, %v; want best %d, refused %d", c.lo, c.hi, c.limit, f, err, c.best, c.refused)
		}
		if c.refused != 0 && f.Why != refuse {
			t.Errorf("Search(%d, %d): why %v, want the refusal", c.lo, c.hi, f.Why)
		}
	}
	if _, err := Search(10, 100, upTo(5)); err == nil {
		t.Error("Search with its low end refused: no error")
	}
}

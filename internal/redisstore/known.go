package redisstore

import (
	"sync"

	"github.com/keypool/keypool"
)

// known is the latest state of each key a Store saved or heard of. A
// resync that finds Redis without one, or with an older one (Redis
// restarted empty, or lost its data), writes it again: a replica that
// starts later then still starts from what the running ones know. It
// holds at most max keys.
type known struct {
	mu     sync.Mutex
	max    int
	states map[keypool.KeyID]keypool.KeyState
}

func newKnown(max int) *known {
	return &known{max: max, states: map[keypool.KeyID]keypool.KeyState{}}
}

// note keeps st when it is the latest of its key.
func (k *known) note(st keypool.KeyState) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cur, ok := k.states[st.ID]
	switch {
	case !ok && len(k.states) >= k.max:
	case !ok || !st.Updated.Before(cur.Updated):
		k.states[st.ID] = st
	}
}

// missing returns the states Redis lacks, or holds older ones of, given
// what a resync read from it.
func (k *known) missing(inRedis []keypool.KeyState) []keypool.KeyState {
	have := make(map[keypool.KeyID]keypool.KeyState, len(inRedis))
	for _, st := range inRedis {
		have[st.ID] = st
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []keypool.KeyState
	for id, st := range k.states {
		if cur, ok := have[id]; !ok || cur.Updated.Before(st.Updated) {
			out = append(out, st)
		}
	}
	return out
}

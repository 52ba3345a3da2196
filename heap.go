package keypool

// The pool keeps two kinds of things in heaps: budgets (a scope's rate
// limits for one model) in their bucket, and keys in their scope. Each kind
// has a ready heap, ordered by a score where lowest is best, and a cooling
// heap, ordered by the time it wakes. The heaps are generic over the thing
// they hold; its position lives in the heapNode it embeds, so that a change
// to one thing re-sorts it in O(log n) without a search.

// heapNode is where one budget or key sits: which heap, at which index, and
// when it leaves the cooling heap.
type heapNode struct {
	idx    int32 // position in its heap; -1 when in none
	where  uint8 // heapNone, heapReady, heapCooling
	wakeAt int64 // when it leaves the cooling heap, as nanoseconds since Pool.epoch
}

const (
	heapNone uint8 = iota
	heapReady
	heapCooling
)

// heaped is what the heaps hold: a pointer to a budget or a key.
type heaped interface {
	comparable
	node() *heapNode
}

// readyHeap is a 4-ary min-heap by score. Scores sit inline next to their
// items so that sifting compares without touching the items, and four
// children share a cache line: a pick stays flat as the pool grows.
type readyHeap[T heaped] []readySlot[T]

type readySlot[T heaped] struct {
	score uint64
	v     T
}

func (h *readyHeap[T]) push(v T, score uint64) {
	*h = append(*h, readySlot[T]{score, v})
	v.node().idx = int32(len(*h) - 1)
	h.up(len(*h) - 1)
}

// fix gives v a new score and restores the heap order.
func (h readyHeap[T]) fix(v T, score uint64) {
	i := int(v.node().idx)
	old := h[i].score
	h[i].score = score
	if score < old {
		h.up(i)
	} else if score > old {
		h.down(i)
	}
}

func (h *readyHeap[T]) remove(v T) {
	old := *h
	i, last := int(v.node().idx), len(old)-1
	if i != last {
		old[i] = old[last]
		old[i].v.node().idx = int32(i)
	}
	old[last] = readySlot[T]{}
	*h = old[:last]
	if i != last {
		h.down(i)
		h.up(i)
	}
	v.node().idx = -1
}

func (h readyHeap[T]) up(i int) {
	s := h[i]
	for i > 0 {
		parent := (i - 1) / 4
		if h[parent].score <= s.score {
			break
		}
		h[i] = h[parent]
		h[i].v.node().idx = int32(i)
		i = parent
	}
	h[i] = s
	s.v.node().idx = int32(i)
}

func (h readyHeap[T]) down(i int) {
	s := h[i]
	n := len(h)
	for {
		first := 4*i + 1
		if first >= n {
			break
		}
		best := first
		for c := first + 1; c < first+4 && c < n; c++ {
			if h[c].score < h[best].score {
				best = c
			}
		}
		if h[best].score >= s.score {
			break
		}
		h[i] = h[best]
		h[i].v.node().idx = int32(i)
		i = best
	}
	h[i] = s
	s.v.node().idx = int32(i)
}

// coolHeap is a binary min-heap by wake time (heapNode.wakeAt, kept inline).
type coolHeap[T heaped] []coolSlot[T]

type coolSlot[T heaped] struct {
	wakeAt int64
	v      T
}

func (h *coolHeap[T]) push(v T) {
	*h = append(*h, coolSlot[T]{v.node().wakeAt, v})
	v.node().idx = int32(len(*h) - 1)
	h.up(len(*h) - 1)
}

// fix re-sorts v after its node's wakeAt changed.
func (h coolHeap[T]) fix(v T) {
	i := int(v.node().idx)
	h[i].wakeAt = v.node().wakeAt
	h.up(i)
	h.down(int(v.node().idx))
}

func (h *coolHeap[T]) remove(v T) {
	old := *h
	i, last := int(v.node().idx), len(old)-1
	if i != last {
		old[i] = old[last]
		old[i].v.node().idx = int32(i)
	}
	old[last] = coolSlot[T]{}
	*h = old[:last]
	if i != last {
		moved := old[i].v
		h.up(i)
		h.down(int(moved.node().idx))
	}
	v.node().idx = -1
}

// next returns the item that wakes first and when; ok is false for an empty
// heap.
func (h coolHeap[T]) next() (v T, wakeAt int64, ok bool) {
	if len(h) == 0 {
		return v, 0, false
	}
	return h[0].v, h[0].wakeAt, true
}

func (h coolHeap[T]) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if h[parent].wakeAt <= h[i].wakeAt {
			break
		}
		h.swap(i, parent)
		i = parent
	}
}

func (h coolHeap[T]) down(i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && h[c+1].wakeAt < h[c].wakeAt {
			c++
		}
		if h[i].wakeAt <= h[c].wakeAt {
			return
		}
		h.swap(i, c)
		i = c
	}
}

func (h coolHeap[T]) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].v.node().idx = int32(i)
	h[j].v.node().idx = int32(j)
}

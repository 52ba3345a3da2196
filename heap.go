package keypool

// readyHeap is a 4-ary min-heap of entries by score. Scores sit inline next to
// their entries so that sifting compares without touching the entries, and four
// children share a cache line: a pick stays flat as the pool grows.
type readyHeap []readySlot

type readySlot struct {
	score uint64
	e     *entry
}

func (h *readyHeap) push(e *entry, score uint64) {
	*h = append(*h, readySlot{score, e})
	e.idx = int32(len(*h) - 1)
	h.up(len(*h) - 1)
}

// fix gives e a new score and restores the heap order.
func (h readyHeap) fix(e *entry, score uint64) {
	i := int(e.idx)
	old := h[i].score
	h[i].score = score
	if score < old {
		h.up(i)
	} else if score > old {
		h.down(i)
	}
}

func (h *readyHeap) remove(e *entry) {
	old := *h
	i, last := int(e.idx), len(old)-1
	if i != last {
		old[i] = old[last]
		old[i].e.idx = int32(i)
	}
	old[last] = readySlot{}
	*h = old[:last]
	if i != last {
		h.down(i)
		h.up(i)
	}
	e.idx = -1
}

func (h readyHeap) up(i int) {
	s := h[i]
	for i > 0 {
		parent := (i - 1) / 4
		if h[parent].score <= s.score {
			break
		}
		h[i] = h[parent]
		h[i].e.idx = int32(i)
		i = parent
	}
	h[i] = s
	s.e.idx = int32(i)
}

func (h readyHeap) down(i int) {
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
		h[i].e.idx = int32(i)
		i = best
	}
	h[i] = s
	s.e.idx = int32(i)
}

// coolHeap is a binary min-heap of cooling entries by the time they wake.
type coolHeap []*entry

func (h *coolHeap) push(e *entry) {
	*h = append(*h, e)
	e.idx = int32(len(*h) - 1)
	h.up(len(*h) - 1)
}

func (h coolHeap) fix(i int) {
	h.up(i)
	h.down(i)
}

func (h *coolHeap) remove(i int) {
	old := *h
	last := len(old) - 1
	e := old[i]
	if i != last {
		old[i] = old[last]
		old[i].idx = int32(i)
	}
	old[last] = nil
	*h = old[:last]
	if i != last {
		h.fix(i)
	}
	e.idx = -1
}

func (h coolHeap) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if h[parent].wakeAt <= h[i].wakeAt {
			break
		}
		h.swap(i, parent)
		i = parent
	}
}

func (h coolHeap) down(i int) {
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

func (h coolHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = int32(i)
	h[j].idx = int32(j)
}

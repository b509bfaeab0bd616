package tokenizer

import "container/heap"

// pairKey packs an adjacent pair of token ids.
func pairKey(l, r int) uint64 { return uint64(uint32(l))<<32 | uint64(uint32(r)) }

// merge is the priority (lower merges first) and result of one BPE merge.
type merge struct {
	rank int32
	id   int32
}

// bpe appends the ids of one pre-tokenized piece, merging adjacent symbols by the lowest merge
// rank first and, among equal ranks, leftmost first: Hugging Face tokenizers' BPE
// (tokenizers/src/models/bpe/word.rs merge_all). Short pieces use a quadratic scan, long ones
// a heap; TestBPEScanMatchesHeap checks that they agree.
func (t *Tokenizer) bpe(out []int, piece string) []int {
	if len(piece) == 1 {
		return append(out, t.byteID[piece[0]])
	}
	if id, ok := t.pieceID[piece]; ok && (t.fam.ignoreMerges || t.mergesToSelf[id]) {
		return append(out, int(id))
	}
	return t.bpeMerge(out, piece)
}

// bpeMerge runs the merge loop on piece.
func (t *Tokenizer) bpeMerge(out []int, piece string) []int {
	if len(piece) == 1 {
		return append(out, t.byteID[piece[0]])
	}
	if len(piece) > 64 {
		return t.bpeHeap(out, piece)
	}
	var buf [64]int32
	syms := buf[:len(piece)]
	for i := 0; i < len(piece); i++ {
		syms[i] = int32(t.byteID[piece[i]])
	}
	return t.bpeScan(out, syms)
}

func (t *Tokenizer) bpeScan(out []int, syms []int32) []int {
	for len(syms) > 1 {
		best, at := merge{rank: -1}, -1
		for i := 0; i+1 < len(syms); i++ {
			m, ok := t.merges[pairKey(int(syms[i]), int(syms[i+1]))]
			if ok && (at < 0 || m.rank < best.rank) {
				best, at = m, i
			}
		}
		if at < 0 {
			break
		}
		syms[at] = best.id
		syms = append(syms[:at+1], syms[at+2:]...)
	}
	for _, s := range syms {
		out = append(out, int(s))
	}
	return out
}

type candidate struct {
	rank, pos int32
	id        int32 // the merge result, to detect a stale entry
}

type candidateHeap []candidate

func (h candidateHeap) Len() int { return len(h) }
func (h candidateHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h candidateHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *candidateHeap) Push(x any)   { *h = append(*h, x.(candidate)) }
func (h *candidateHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// bpeHeap is the O(n log n) form of the merge loop for long pieces: symbols in a linked list,
// candidate pairs in a heap ordered by (rank, position), stale entries skipped on pop.
func (t *Tokenizer) bpeHeap(out []int, piece string) []int {
	n := len(piece)
	id := make([]int32, n)
	prev := make([]int32, n)
	next := make([]int32, n)
	for i := 0; i < n; i++ {
		id[i] = int32(t.byteID[piece[i]])
		prev[i], next[i] = int32(i-1), int32(i+1)
	}
	next[n-1] = -1
	h := make(candidateHeap, 0, n)
	push := func(l int32) {
		r := next[l]
		if l < 0 || r < 0 {
			return
		}
		if m, ok := t.merges[pairKey(int(id[l]), int(id[r]))]; ok {
			h = append(h, candidate{rank: m.rank, pos: l, id: m.id})
		}
	}
	for i := 0; i+1 < n; i++ {
		push(int32(i))
	}
	heap.Init(&h)
	for h.Len() > 0 {
		c := heap.Pop(&h).(candidate)
		l := c.pos
		if id[l] < 0 {
			continue // merged into its left neighbour
		}
		r := next[l]
		if r < 0 {
			continue
		}
		m, ok := t.merges[pairKey(int(id[l]), int(id[r]))]
		if !ok || m.id != c.id || m.rank != c.rank {
			continue
		}
		id[l] = m.id
		id[r] = -1
		next[l] = next[r]
		if next[r] >= 0 {
			prev[next[r]] = l
		}
		if p := prev[l]; p >= 0 {
			if m, ok := t.merges[pairKey(int(id[p]), int(id[l]))]; ok {
				heap.Push(&h, candidate{rank: m.rank, pos: p, id: m.id})
			}
		}
		if nr := next[l]; nr >= 0 {
			if m, ok := t.merges[pairKey(int(id[l]), int(id[nr]))]; ok {
				heap.Push(&h, candidate{rank: m.rank, pos: l, id: m.id})
			}
		}
	}
	for i := int32(0); i >= 0; i = next[i] {
		out = append(out, int(id[i]))
	}
	return out
}

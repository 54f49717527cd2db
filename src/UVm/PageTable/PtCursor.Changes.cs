namespace UVm.PageTable;

/// <summary>The changes a mutable cursor makes to leaf entries: map, unmap, protect.</summary>
internal sealed partial class PtCursor
{
    /// <summary>
    /// Maps a tracked base page at the current address (going down and creating nodes as needed,
    /// splitting an untracked huge entry in the way) and moves past it.
    /// Returns the entry it replaced (0 if none).
    /// </summary>
    internal ulong MapBase(ulong pte)
    {
        System.Diagnostics.Debug.Assert(_va + Paging.PageSize <= BarrierEnd);
        while (_level > 1)
        {
            ulong cur = CurPte;
            if (!Pte.IsPresent(cur)) LevelDownCreate();
            else if (!Pte.IsLast(cur, _level)) LevelDown();
            else LevelDownSplit();
        }
        PtNode node = CurNode;
        int idx = CurIdx;
        ulong old = node.Ptes[idx];
        node.SetLeaf(idx, pte);
        Record(_va, 1, old, pte, PtChangeKind.Map);
        MoveForward();
        return old;
    }

    /// <summary>
    /// Maps one untracked entry of physical memory at <paramref name="paddr"/>, as large as the
    /// alignment of <c>Va</c> and <paramref name="paddr"/> and the remaining length allow
    /// (2 MiB at most), and moves past it. Returns the slot mapped and the entry it replaced.
    /// </summary>
    internal (PtSlot Mapped, ulong Replaced) MapUntrackedStep(ulong paddr, ulong end, PageProperty prop)
    {
        System.Diagnostics.Debug.Assert(end <= BarrierEnd);
        while (true)
        {
            ulong size = Paging.SizeAt(_level);
            ulong cur = CurPte;
            bool fits = _level <= 2 && _va % size == 0 && _va + size <= end && paddr % size == 0;
            bool isTable = Pte.IsPresent(cur) && !Pte.IsLast(cur, _level);
            if (fits && !isTable) break;
            if (!Pte.IsPresent(cur)) LevelDownCreate();
            else if (isTable) LevelDown();
            else LevelDownSplit();
        }
        PtNode node = CurNode;
        int idx = CurIdx;
        ulong old = node.Ptes[idx];
        ulong pte = Pte.Leaf(paddr, prop, _level) | Pte.Untracked;
        node.SetLeaf(idx, pte);
        Record(_va, _level, old, pte, PtChangeKind.Map);
        var slot = new PtSlot(_va, pte, _level);
        MoveForward();
        return (slot, Pte.IsPresent(old) ? old : 0);
    }

    /// <summary>
    /// Removes every leaf under the guard node of a fresh mutable cursor over the whole table
    /// (locking each node below on the way down, so cursors of other threads still inside are
    /// waited for) and drops every node below it, adding the frame addresses of the tracked
    /// leaves to <paramref name="tracked"/>, one array per node: what a space's dispose does, one
    /// walk over the nodes instead of a <see cref="TakeNext"/> per slot. Not journaled.
    /// </summary>
    internal void TakeAll(List<ulong[]> tracked)
    {
        System.Diagnostics.Debug.Assert(BarrierStart == 0 && BarrierEnd == _pt.Size && _level == _guardLevel);
        TakeAllUnder(GuardNode, _guardLevel, tracked, new ulong[Paging.EntriesPerNode]);
    }

    private void TakeAllUnder(PtNode node, int level, List<ulong[]> tracked, ulong[] frames)
    {
        int n = 0;
        for (int i = 0; i < Paging.EntriesPerNode; i++)
        {
            ulong pte = node.Ptes[i];
            if (!Pte.IsPresent(pte)) continue;
            if (Pte.IsLast(pte, level))
            {
                if (!Pte.IsUntracked(pte)) frames[n++] = Pte.Paddr(pte);
            }
            else
            {
                if (n > 0) tracked.Add(frames[..n]); // the child fills the buffer in turn
                n = 0;
                // A cursor of another thread may hold a node below: wait for it, as a descent does.
                PtNode child = node.Children![i]!;
                child.Lock();
                try
                {
                    TakeAllUnder(child, level - 1, tracked, frames);
                }
                finally
                {
                    child.Unlock();
                }
                _pt.NodeDropped(level - 1);
            }
            node.Clear(i);
        }
        if (n > 0) tracked.Add(frames[..n]);
    }

    /// <summary>
    /// Removes the first mapped slot in <c>[Va, Va + len)</c> and moves past it; an untracked
    /// huge entry only partly in the range is split first. Returns the removed slot, or a
    /// default slot (not mapped) when the range held no mapping, with the cursor at its end.
    /// </summary>
    internal PtSlot TakeNext(ulong len)
    {
        ulong end = _va + len;
        while (_va < end)
        {
            ulong pte = CurPte;
            ulong size = Paging.SizeAt(_level);
            if (!Pte.IsPresent(pte))
            {
                if (Paging.AlignDown(_va, size) + size > end) { _va = end; break; }
                MoveForward();
                continue;
            }
            if (!Pte.IsLast(pte, _level))
            {
                DescendOrSkipEmpty();
                continue;
            }
            if (_va % size != 0 || _va + size > end)
            {
                SplitPartialHuge(pte);
                continue;
            }
            PtNode node = CurNode;
            node.Clear(CurIdx);
            Record(_va, _level, pte, 0, PtChangeKind.Unmap);
            var slot = new PtSlot(_va, pte, _level);
            MoveForward();
            return slot;
        }
        return default;
    }

    /// <summary>
    /// Applies <paramref name="op"/> to the first mapped slot in <c>[Va, Va + len)</c> and moves
    /// past it. Returns the slot with its new entry, or null when nothing is mapped there.
    /// </summary>
    internal PtSlot? ProtectNext(ulong len, Func<PageProperty, PageProperty> op)
    {
        ulong end = _va + len;
        while (_va < end)
        {
            ulong pte = CurPte;
            if (!Pte.IsPresent(pte))
            {
                MoveForward();
                continue;
            }
            if (!Pte.IsLast(pte, _level))
            {
                DescendOrSkipEmpty();
                continue;
            }
            ulong size = Paging.SizeAt(_level);
            if (_va % size != 0 || _va + size > end)
            {
                SplitPartialHuge(pte);
                continue;
            }
            ulong updated = Pte.WithProp(pte, op(Pte.ToProp(pte)));
            CurNode.Ptes[CurIdx] = updated;
            Record(_va, _level, pte, updated, PtChangeKind.Protect);
            var slot = new PtSlot(_va, updated, _level);
            MoveForward();
            return slot;
        }
        return null;
    }

}

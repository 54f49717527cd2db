using System.Runtime.CompilerServices;

namespace UVm.PageTable;

/// <summary>What a cursor step found or removed at one slot.</summary>
/// <param name="Va">Start of the slot (aligned to its page size).</param>
/// <param name="Entry">The leaf entry (0 when nothing was mapped).</param>
/// <param name="Level">Level of the slot (1 = 4 KiB, 2 = 2 MiB).</param>
internal readonly record struct PtSlot(ulong Va, ulong Entry, int Level)
{
    internal ulong Size => Paging.PageSizeAt(Level);
    internal bool IsMapped => Pte.IsPresent(Entry);
}

/// <summary>What a journaled change did to a leaf entry (see <see cref="PtCursor.StartJournal"/>).</summary>
internal enum PtChangeKind : byte
{
    /// <summary>A page or huge page mapped over whatever was there.</summary>
    Map,
    /// <summary>A leaf removed.</summary>
    Unmap,
    /// <summary>A leaf's rights changed, its address kept.</summary>
    Protect,
}

/// <summary>
/// A run of <see cref="Count"/> leaf changes of one kind at one level, adjacent in address, whose
/// old and new entries each continue the first one's (the same bits, the address one slot further
/// on; or all absent). One record for a whole contiguous map, so the journal stays small.
/// </summary>
internal struct PtChange
{
    internal ulong Va, Old, New;
    internal uint Count;
    internal byte Level;
    internal PtChangeKind Kind;

    /// <summary>The old and new entries of change <paramref name="i"/> of the run.</summary>
    internal readonly (ulong Va, ulong Old, ulong New) At(uint i)
    {
        ulong step = i * Paging.PageSizeAt(Level);
        return (Va + step, Old == 0 ? 0 : Old + step, New == 0 ? 0 : New + step);
    }

    /// <summary>Whether a change of <paramref name="kind"/> at <paramref name="va"/> continues the run.</summary>
    internal readonly bool Extends(ulong va, int level, ulong old, ulong @new, PtChangeKind kind)
    {
        if (kind != Kind || level != Level || Count == uint.MaxValue) return false;
        ulong step = Count * Paging.PageSizeAt(level);
        return va == Va + step && Continues(Old, old, step) && Continues(New, @new, step);
    }

    private static bool Continues(ulong first, ulong next, ulong step) => first == 0 ? next == 0 : next == first + step;
}

/// <summary>
/// A cursor over a range of a <see cref="PageTable"/>, holding the locks of the lock protocol.
/// </summary>
/// <remarks>
/// <para><b>Lock protocol.</b> On creation the cursor locks the root and walks down, hand over
/// hand (child locked before parent unlocked), while its whole range still falls in a single
/// entry: it stops at the lowest node covering the range, its <i>guard</i> node, and keeps that
/// lock until disposed. A mutable cursor creates missing nodes on the way down, so cursors on
/// disjoint ranges under an empty region still end on different guard nodes and run in
/// parallel. Below the guard the cursor holds exactly the locks of the path to the node it is
/// at, taking a child's lock on the way down and dropping it on the way up. Locks are always
/// taken parent before child, so no two cursors can wait on each other in a cycle; a cursor
/// whose range overlaps another's waits, at the shared node, until the other is disposed.</para>
/// <para><b>Node reclamation.</b> When a mutable cursor leaves a node that has no present
/// entry, it removes it from the parent it also holds: nobody else can be inside it, because
/// anyone holding it or walking into it would hold the parent's lock or the node's lock. The
/// guard node itself is reclaimed after release by <see cref="PageTable.ReclaimIfEmpty"/>, which
/// never waits: if another cursor holds a node on the way, the empty node is left for the next
/// mutable cursor that passes through it.</para>
/// <para><b>Invariant.</b> Below the guard level, <see cref="_va"/> lies inside the current
/// node's range; at the guard level it may sit past the range once the cursor is exhausted.</para>
/// <para>Arguments are validated by the public cursors in <c>Spaces/</c>; this type asserts.</para>
/// </remarks>
internal sealed class PtCursor
{
    private readonly PageTable _pt;
    private readonly PtNode?[] _guards = new PtNode?[Paging.NrLevels];
    private int _level;
    private int _guardLevel;
    private ulong _va;
    private bool _released;
    private List<PtChange>? _journal; // leaf changes since the last commit, when journaling

    internal PtCursor(PageTable pt, ulong start, ulong end, bool mutable)
    {
        System.Diagnostics.Debug.Assert(start < end && end <= pt.Size && Paging.IsAligned(start) && Paging.IsAligned(end));
        _pt = pt;
        BarrierStart = start;
        BarrierEnd = end;
        _va = start;
        _level = _guardLevel = Paging.NrLevels;
        pt.Root.Lock();
        _guards[Paging.NrLevels - 1] = pt.Root;
        try
        {
            while (_level > 1 && Paging.Index(start, _level) == Paging.Index(end - 1, _level))
            {
                ulong pte = CurPte;
                // Read-only cursors create missing nodes too: stopping above an absent entry would
                // keep a node locked that covers far more than the range (the root, for a cursor
                // over an empty region), and every other cursor and fault would wait for it.
                if (!Pte.IsPresent(pte)) LevelDownCreate();
                else if (Pte.IsLast(pte, _level)) break;
                else LevelDown();
                // Hand over hand: the child is locked, now let go of the parent.
                _guards[_level]!.Unlock();
                _guards[_level] = null;
                _guardLevel--;
            }
        }
        catch
        {
            // A node on the way is this thread's own (PtNode.Lock threw): let go of the one held.
            PtNode held = _guards[_level - 1]!;
            _guards[_level - 1] = null;
            held.Unlock();
            _released = true;
            throw;
        }
    }

    internal ulong BarrierStart { get; }
    internal ulong BarrierEnd { get; }
    internal ulong Va => _va;
    internal int GuardLevel => _guardLevel;

    /// <summary>The node the cursor keeps locked for its whole life (valid until <see cref="Release"/>).</summary>
    internal PtNode GuardNode => _guards[_guardLevel - 1]!;

    private PtNode CurNode => _guards[_level - 1]!;
    private int CurIdx => Paging.Index(_va, _level);
    private ulong CurPte => CurNode.Ptes[CurIdx];

    /// <summary>The slot at the current address: mapped (leaf entry) or not, and its extent.</summary>
    internal PtSlot Query()
    {
        System.Diagnostics.Debug.Assert(_va < BarrierEnd);
        while (true)
        {
            ulong pte = CurPte;
            if (Pte.IsPresent(pte) && !Pte.IsLast(pte, _level))
            {
                LevelDown();
                continue;
            }
            ulong size = Paging.PageSizeAt(_level);
            if (!Pte.IsPresent(pte) && CurNode.ValidCount == 0 && _level < Paging.NrLevels)
            {
                // An empty node (one a cursor built on its way down): the hole is all of it.
                ulong span = Paging.PageSizeAt(_level + 1);
                return new PtSlot(Paging.AlignDown(_va, span), 0, _level + 1);
            }
            return new PtSlot(Paging.AlignDown(_va, size), Pte.IsPresent(pte) ? pte : 0, _level);
        }
    }

    /// <summary>Moves to <paramref name="va"/> (in the barrier and aligned), or, at or past its end, exhausts the cursor.</summary>
    internal void JumpOrExhaust(ulong va)
    {
        if (va < BarrierEnd)
        {
            Jump(va);
            return;
        }
        while (_level < _guardLevel) LevelUp();
        _va = va;
    }

    /// <summary>Moves to the start of the next slot at the current level, climbing out of finished nodes.</summary>
    internal void MoveForward()
    {
        ulong size = Paging.PageSizeAt(_level);
        ulong next = Paging.AlignDown(_va, size) + size;
        while (_level < _guardLevel && Paging.Index(next, _level) == 0) LevelUp();
        _va = next;
    }

    /// <summary>The first mapped address in <c>[Va, Va + len)</c>, with the cursor stopped there; else null.</summary>
    internal ulong? FindNext(ulong len)
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
            return _va;
        }
        return null;
    }

    /// <summary>Moves to <paramref name="va"/>, which the caller checked lies in the barrier and is aligned.</summary>
    internal void Jump(ulong va)
    {
        while (true)
        {
            ulong span = Paging.PageSizeAt(_level + 1);
            ulong nodeStart = _level == Paging.NrLevels ? 0 : Paging.AlignDown(_va, span);
            if (_level == Paging.NrLevels || (va >= nodeStart && va - nodeStart < span))
            {
                _va = va;
                return;
            }
            // An exhausted cursor may sit past its guard node; any in-range target is inside it.
            if (_level == _guardLevel)
            {
                _va = va;
                return;
            }
            LevelUp();
        }
    }

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
            ulong size = Paging.PageSizeAt(_level);
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
            ulong size = Paging.PageSizeAt(_level);
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
            ulong size = Paging.PageSizeAt(_level);
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

    /// <summary>
    /// From now on every leaf change is recorded, so that the changes made since the last
    /// <see cref="CommitJournal"/> can be undone (<see cref="UndoJournal"/>) when the host refuses
    /// to mirror them. Structural changes (nodes created, split or reclaimed) are not recorded:
    /// they do not change what is mapped.
    /// </summary>
    internal void StartJournal() => _journal = new List<PtChange>();

    /// <summary>Forgets the recorded changes: they are final (their host updates were applied).</summary>
    internal void CommitJournal() => _journal?.Clear();

    /// <summary>
    /// Undoes every change recorded since the last commit, newest first, so that each leaf is
    /// again what it was; calls <paramref name="undone"/> with each change's kind, old and new
    /// entry. The cursor's position is unspecified afterwards.
    /// </summary>
    internal void UndoJournal(Action<PtChangeKind, ulong, ulong> undone)
    {
        if (_journal == null) return;
        for (int r = _journal.Count - 1; r >= 0; r--)
        {
            PtChange change = _journal[r];
            for (uint i = change.Count; i-- > 0;)
            {
                (ulong va, ulong old, ulong @new) = change.At(i);
                RestoreLeaf(va, change.Level, old);
                undone(change.Kind, old, @new);
            }
        }
        _journal.Clear();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Record(ulong va, int level, ulong old, ulong @new, PtChangeKind kind)
    {
        List<PtChange>? journal = _journal;
        if (journal == null) return;
        old = Pte.IsPresent(old) ? old : 0;
        int n = journal.Count;
        if (n > 0)
        {
            ref PtChange last = ref System.Runtime.InteropServices.CollectionsMarshal.AsSpan(journal)[n - 1];
            if (last.Extends(va, level, old, @new, kind))
            {
                last.Count++;
                return;
            }
        }
        journal.Add(new PtChange { Va = va, Level = (byte)level, Old = old, New = @new, Count = 1, Kind = kind });
    }

    /// <summary>
    /// Puts <paramref name="pte"/> (0: nothing) back as the leaf of <paramref name="level"/> at
    /// <paramref name="va"/>, creating the nodes on the way that were reclaimed since, and
    /// dropping a table that stands where the leaf was (it holds only pieces of a split huge
    /// entry, undone before this one: changes are undone newest first).
    /// </summary>
    private void RestoreLeaf(ulong va, int level, ulong pte)
    {
        Jump(va);
        while (_level > level)
        {
            ulong cur = CurPte;
            if (!Pte.IsPresent(cur))
            {
                if (!Pte.IsPresent(pte)) return; // absent above: absent here already
                LevelDownCreate();
            }
            else if (!Pte.IsLast(cur, _level)) LevelDown();
            else LevelDownSplit();
        }
        PtNode node = CurNode;
        int idx = CurIdx;
        ulong here = node.Ptes[idx];
        if (Pte.IsPresent(here) && !Pte.IsLast(here, _level))
        {
            PtNode child = node.Children![idx]!;
            System.Diagnostics.Debug.Assert(child.Level == 1, "only 2 MiB entries are huge");
            node.Clear(idx);
            _pt.NodeDropped(child.Level);
        }
        if (Pte.IsPresent(pte)) node.SetLeaf(idx, pte);
        else node.Clear(idx);
    }

    /// <summary>Releases every lock the cursor holds, reclaiming nodes it leaves empty. Idempotent.</summary>
    internal void Release()
    {
        if (_released) return;
        _released = true;
        while (_level < _guardLevel) LevelUp();
        PtNode guard = _guards[_guardLevel - 1]!;
        bool reclaim = _guardLevel < Paging.NrLevels && guard.ValidCount == 0;
        _guards[_guardLevel - 1] = null;
        guard.Unlock();
        // Each removal may leave the parent empty in turn: climb while that happens.
        for (int level = _guardLevel; reclaim && level < Paging.NrLevels; level++)
            reclaim = _pt.ReclaimIfEmpty(BarrierStart, level);
    }

    private void SplitPartialHuge(ulong pte)
    {
        // Only untracked entries are ever huge: tracked frames are mapped as base pages.
        if (!Pte.IsUntracked(pte)) throw new InvalidOperationException("a tracked huge entry cannot be split");
        LevelDownSplit();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void DescendOrSkipEmpty()
    {
        LevelDown();
        if (CurNode.ValidCount == 0)
        {
            LevelUp();
            MoveForward();
        }
    }

    private void LevelDown()
    {
        PtNode child = CurNode.Children![CurIdx]!;
        child.Lock();
        _level--;
        _guards[_level - 1] = child;
    }

    private void LevelDownCreate()
    {
        PtNode child = _pt.NewNode(_level - 1);
        child.Lock();
        CurNode.SetChild(CurIdx, child);
        _level--;
        _guards[_level - 1] = child;
    }

    /// <summary>Replaces the huge leaf at the current slot with a child node of 512 smaller leaves.</summary>
    private void LevelDownSplit()
    {
        ulong pte = CurPte;
        int childLevel = _level - 1;
        ulong childSize = Paging.PageSizeAt(childLevel);
        PtNode child = _pt.NewNode(childLevel);
        child.Lock();
        ulong bits = pte & ~Pte.AddrMask & ~Pte.Huge;
        if (childLevel > 1) bits |= Pte.Huge;
        ulong basePa = Pte.Paddr(pte);
        for (int i = 0; i < Paging.EntriesPerNode; i++) child.Ptes[i] = bits | (basePa + (ulong)i * childSize);
        child.ValidCount = Paging.EntriesPerNode;
        CurNode.SetChild(CurIdx, child);
        _level--;
        _guards[_level - 1] = child;
    }

    private void LevelUp()
    {
        PtNode node = _guards[_level - 1]!;
        _guards[_level - 1] = null;
        bool drop = node.ValidCount == 0;
        if (drop)
        {
            _guards[_level]!.Clear(Paging.Index(_va, _level + 1));
            _pt.NodeDropped(_level);
        }
        node.Unlock();
        _level++;
    }
}

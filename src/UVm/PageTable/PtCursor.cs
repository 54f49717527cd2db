using System.Runtime.CompilerServices;

namespace UVm.PageTable;

/// <summary>What a cursor step found or removed at one slot.</summary>
/// <param name="Va">Start of the slot (aligned to its page size).</param>
/// <param name="Entry">The leaf entry (0 when nothing was mapped).</param>
/// <param name="Level">Level of the slot (1 = 4 KiB, 2 = 2 MiB).</param>
internal readonly record struct PtSlot(ulong Va, ulong Entry, int Level)
{
    internal ulong Size => Paging.SizeAt(Level);
    internal bool IsMapped => Pte.IsPresent(Entry);
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
internal sealed partial class PtCursor
{
    private readonly PageTable _pt;
    private readonly PtNode?[] _guards = new PtNode?[Paging.NrLevels];
    private int _level;
    private int _guardLevel;
    private ulong _va;
    private bool _released;
    private bool _journaling;          // whether leaf changes are recorded (see StartJournal)
    private PtChange _firstChange;     // the first record since the last commit (Count 0: none), kept inline:
    private List<PtChange>? _moreChanges; // most batches are one run, and then the journal allocates nothing

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
            ulong size = Paging.SizeAt(_level);
            if (!Pte.IsPresent(pte) && CurNode.ValidCount == 0 && _level < Paging.NrLevels)
            {
                // An empty node (one a cursor built on its way down): the hole is all of it.
                ulong span = Paging.SizeAt(_level + 1);
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
        ulong size = Paging.SizeAt(_level);
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
            if (_level == Paging.NrLevels)
            {
                _va = va; // the root covers every address
                return;
            }
            ulong span = Paging.SizeAt(_level + 1);
            ulong nodeStart = Paging.AlignDown(_va, span);
            if (va >= nodeStart && va - nodeStart < span)
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
        ulong childSize = Paging.SizeAt(childLevel);
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

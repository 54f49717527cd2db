using System.Runtime.CompilerServices;

namespace UVm.PageTable;

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
        ulong step = i * Paging.SizeAt(Level);
        return (Va + step, Old == 0 ? 0 : Old + step, New == 0 ? 0 : New + step);
    }

    /// <summary>Whether a change of <paramref name="kind"/> at <paramref name="va"/> continues the run.</summary>
    internal readonly bool Extends(ulong va, int level, ulong old, ulong @new, PtChangeKind kind)
    {
        if (kind != Kind || level != Level || Count == uint.MaxValue) return false;
        ulong step = Count * Paging.SizeAt(level);
        return va == Va + step && Continues(Old, old, step) && Continues(New, @new, step);
    }

    private static bool Continues(ulong first, ulong next, ulong step) => first == 0 ? next == 0 : next == first + step;
}

/// <summary>
/// The undo journal of a cursor: what its leaf changes replaced, so that a batch the host
/// refuses can be taken back exactly (see <c>TlbFlusher.DispatchTlbFlush</c>).
/// </summary>
internal sealed partial class PtCursor
{
    /// <summary>
    /// From now on every leaf change is recorded, so that the changes made since the last
    /// <see cref="CommitJournal"/> can be undone (<see cref="UndoJournal"/>) when the host refuses
    /// to mirror them. Structural changes (nodes created, split or reclaimed) are not recorded:
    /// they do not change what is mapped.
    /// </summary>
    internal void StartJournal() => _journaling = true;

    /// <summary>
    /// Forgets the recorded changes: they are final (their host updates were applied). When the
    /// table keeps a change log (<see cref="PageTable.Changes"/>), they go there first.
    /// </summary>
    internal void CommitJournal()
    {
        if (_pt.Changes is { } log)
        {
            if (_firstChange.Count > 0) log.Record(_firstChange.Va, _firstChange.Count * Paging.SizeAt(_firstChange.Level));
            if (_moreChanges != null)
                foreach (PtChange c in _moreChanges) log.Record(c.Va, c.Count * Paging.SizeAt(c.Level));
        }
        ForgetJournal();
    }

    /// <summary>Whether a change recorded since the last commit replaced or made a host copy (a run's entries share their bits).</summary>
    internal bool JournalTouchesHostCopies()
    {
        static bool Touches(in PtChange c) => c.Count > 0 && (Pte.IsHostCopy(c.Old) || Pte.IsHostCopy(c.New));
        if (Touches(_firstChange)) return true;
        if (_moreChanges != null)
            foreach (PtChange c in _moreChanges)
                if (Touches(c)) return true;
        return false;
    }

    private void ForgetJournal()
    {
        _firstChange = default;
        _moreChanges?.Clear();
    }

    /// <summary>
    /// Undoes every change recorded since the last commit, newest first, so that each leaf is
    /// again what it was; calls <paramref name="undone"/> with each change's kind, old and new
    /// entry. The cursor's position is unspecified afterwards.
    /// </summary>
    internal void UndoJournal(Action<PtChangeKind, ulong, ulong> undone)
    {
        if (_moreChanges != null)
            for (int r = _moreChanges.Count - 1; r >= 0; r--) Undo(_moreChanges[r], undone);
        if (_firstChange.Count > 0) Undo(_firstChange, undone);
        ForgetJournal();
    }

    private void Undo(in PtChange change, Action<PtChangeKind, ulong, ulong> undone)
    {
        for (uint i = change.Count; i-- > 0;)
        {
            (ulong va, ulong old, ulong @new) = change.At(i);
            RestoreLeaf(va, change.Level, old);
            undone(change.Kind, old, @new);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Record(ulong va, int level, ulong old, ulong @new, PtChangeKind kind)
    {
        if (!_journaling) return;
        old = Pte.IsPresent(old) ? old : 0;
        if (_firstChange.Count == 0)
        {
            _firstChange = new PtChange { Va = va, Level = (byte)level, Old = old, New = @new, Count = 1, Kind = kind };
            return;
        }
        List<PtChange>? more = _moreChanges;
        ref PtChange last = ref (more is { Count: > 0 } ? ref System.Runtime.InteropServices.CollectionsMarshal.AsSpan(more)[^1] : ref _firstChange);
        if (last.Extends(va, level, old, @new, kind))
        {
            last.Count++;
            return;
        }
        (_moreChanges ??= new List<PtChange>()).Add(new PtChange { Va = va, Level = (byte)level, Old = old, New = @new, Count = 1, Kind = kind });
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
        // Jump stays in the node it is in when that node covers va: below the leaf's level (in
        // the pieces of a huge entry split after this change) climb back to it first.
        while (_level < level) LevelUp();
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

}

namespace UVm.PageTable;

/// <summary>
/// A 4-level radix tree describing user addresses <c>[0, Size)</c>. All access goes through
/// <see cref="PtCursor"/>, which implements the lock protocol.
/// </summary>
internal sealed class PageTable
{
    private long _nodes = 1;
    private long _footprint = PtNode.FootprintBytes(Paging.NrLevels);

    internal PageTable(ulong size)
    {
        Size = size;
        Root = new PtNode(Paging.NrLevels);
    }

    internal PtNode Root { get; }

    /// <summary>End of the user range; every cursor range lies below it.</summary>
    internal ulong Size { get; }

    /// <summary>
    /// The pages whose leaves changed since a mark, when somebody measures them (a space reset
    /// in place to a snapshot); null otherwise, and then committing a batch records nothing.
    /// </summary>
    internal PtChangeLog? Changes { get; set; }

    /// <summary>Nodes currently in the tree, the root included.</summary>
    internal long NodeCount => Volatile.Read(ref _nodes);

    /// <summary>Managed bytes the nodes occupy (entries, child references, object headers).</summary>
    internal long FootprintBytes => Volatile.Read(ref _footprint);

    /// <summary>
    /// The leaf entry mapping <paramref name="va"/> (0 when none), read without taking any lock:
    /// for a thread that must not wait (it may hold the locks itself), to say what the table
    /// says. Racing changes may or may not be seen; the walk never fails (nodes are managed
    /// objects, and a child that went away reads as absent).
    /// </summary>
    internal ulong PeekLeaf(ulong va) => PeekLeaf(va, out _);

    /// <summary><see cref="PeekLeaf(ulong)"/>, and the level of the leaf (1 when there is none).</summary>
    internal ulong PeekLeaf(ulong va, out int leafLevel)
    {
        leafLevel = 1;
        if (va >= Size) return 0;
        PtNode node = Root;
        for (int level = Paging.NrLevels; ; level--)
        {
            int idx = Paging.Index(va, level);
            ulong pte = Volatile.Read(ref node.Ptes[idx]);
            if (!Pte.IsPresent(pte)) return 0;
            if (Pte.IsLast(pte, level))
            {
                leafLevel = level;
                return pte;
            }
            PtNode? child = Volatile.Read(ref node.Children![idx]);
            if (child == null) return 0;
            node = child;
        }
    }

    internal PtNode NewNode(int level)
    {
        Interlocked.Increment(ref _nodes);
        Interlocked.Add(ref _footprint, PtNode.FootprintBytes(level));
        return new PtNode(level);
    }

    internal void NodeDropped(int level)
    {
        Interlocked.Decrement(ref _nodes);
        Interlocked.Add(ref _footprint, -PtNode.FootprintBytes(level));
    }

    /// <summary>
    /// Removes the node of <paramref name="level"/> covering <paramref name="va"/> if it is empty.
    /// Used when a cursor's own top node (which it cannot remove: it never holds that node's
    /// parent) is left empty: after the cursor released its locks, walk down again from the root,
    /// hand over hand, and drop the node under its parent's lock.
    /// </summary>
    /// <remarks>
    /// Best effort: it never waits. A node on the way may be the guard of another cursor, alive
    /// for long or even on the calling thread (a disjoint cursor whose guard is an ancestor), so
    /// waiting could block a <c>Dispose</c> for that cursor's whole life or deadlock. When a lock
    /// is taken, the empty node stays; the next mutable cursor that passes through drops it.
    /// </remarks>
    /// <returns>Whether the node was removed and its parent is now empty.</returns>
    internal bool ReclaimIfEmpty(ulong va, int level)
    {
        PtNode parent = Root;
        if (!parent.TryLock()) return false;
        try
        {
            for (int l = Paging.NrLevels; l > level + 1; l--)
            {
                int i = Paging.Index(va, l);
                ulong pte = parent.Ptes[i];
                if (!Pte.IsPresent(pte) || Pte.IsLast(pte, l)) return false;
                PtNode next = parent.Children![i]!;
                if (!next.TryLock()) return false;
                parent.Unlock();
                parent = next;
            }
            int idx = Paging.Index(va, level + 1);
            ulong entry = parent.Ptes[idx];
            if (!Pte.IsPresent(entry) || Pte.IsLast(entry, level + 1)) return false;
            PtNode child = parent.Children![idx]!;
            if (!child.TryLock()) return false;
            bool empty = child.ValidCount == 0;
            if (empty) parent.Clear(idx);
            child.Unlock();
            if (empty) NodeDropped(level);
            return empty && parent.ValidCount == 0;
        }
        finally
        {
            parent.Unlock();
        }
    }
}

namespace UVm.PageTable;

/// <summary>Receives each leaf a copy-on-write fork copies, to mirror it on the hosts and count references.</summary>
internal interface IForkVisitor
{
    /// <summary>
    /// Called before the leaf changes in either table. Throwing refuses it: the fork is then
    /// undone, and every leaf already visited is restored in the parent.
    /// </summary>
    /// <param name="va">Start of the slot.</param>
    /// <param name="size">Size of the slot.</param>
    /// <param name="before">The parent's entry before the fork.</param>
    /// <param name="after">The entry both spaces hold after it (write access removed from tracked frames, or a host copy made of them).</param>
    void Leaf(ulong va, ulong size, ulong before, ulong after);
}

/// <summary>
/// A visitor that takes a whole last-level node at once, instead of one
/// <see cref="IForkVisitor.Leaf"/> call per entry: the way a table, which holds mostly runs of
/// base pages, is copied fast.
/// </summary>
internal interface INodeForkVisitor : IForkVisitor
{
    /// <summary>
    /// Called before the node's entries change in either table, with <paramref name="before"/>
    /// (the source's entries) and <paramref name="after"/> (what both will hold; 0 where none is
    /// present), the first at <paramref name="vaBase"/>: does what <see cref="IForkVisitor.Leaf"/>
    /// does for each. Throwing refuses the node, having taken nothing for any of its entries.
    /// </summary>
    void Leaves(ulong vaBase, ReadOnlySpan<ulong> before, ReadOnlySpan<ulong> after);
}

/// <summary>
/// The page-table half of a copy-on-write fork: copies every node under a cursor's guard into a
/// fresh table, sharing the frames and removing write access from tracked leaves in both (or, for
/// a snapshot of a space with host copies, making its private writable leaves host copies).
/// </summary>
internal static class PtFork
{
    /// <summary>
    /// Copies the tree under <paramref name="parent"/>'s guard node into <paramref name="child"/>.
    /// The cursor must cover the whole user range <c>[0, Size)</c> and be mutable and fresh, so its
    /// guard node covers the range and is based at address 0. Child nodes of the parent are
    /// locked while copied; the child table is not yet shared with anybody and needs no lock.
    /// </summary>
    /// <remarks>
    /// With <paramref name="hostCopyAt"/> (a snapshot of a space that uses host copies) a
    /// writable tracked leaf at an address it accepts (a private page) keeps W and becomes a host
    /// copy in both tables instead of losing W.
    /// The parent holds no host copy the host copied when this is called (a fork's none at all);
    /// one it holds stays one, its frame shared with the copy as it is. If the visitor throws, the parent's
    /// entries already changed get their old value back before the exception goes on (the
    /// cursor's guard still shuts everyone else out), so the parent's table is as before; the
    /// child table is left half-built for the caller to drop.
    /// </remarks>
    internal static void CopyOnWrite(PtCursor parent, PageTable child, IForkVisitor visitor, Func<ulong, bool>? hostCopyAt = null)
    {
        System.Diagnostics.Debug.Assert(parent.BarrierStart == 0 && parent.Va == 0);
        int guardLevel = parent.GuardLevel;
        PtNode dst = child.Root;
        for (int level = Paging.NrLevels; level > guardLevel; level--)
        {
            PtNode next = child.NewNode(level - 1);
            dst.SetChild(0, next);
            dst = next;
        }
        var writeProtected = new List<(PtNode Node, ulong[] Mask)>();
        try
        {
            CopyNode(parent.GuardNode, dst, guardLevel, 0, child, visitor, writeProtected, lockSource: true, hostCopyAt != null ? Share.HostCopy : Share.WriteProtect, hostCopyAt);
        }
        catch
        {
            // Every entry changed had W and was no host copy.
            foreach ((PtNode node, ulong[] mask) in writeProtected)
            {
                for (int i = 0; i < Paging.EntriesPerNode; i++)
                    if ((mask[i >> 6] & (1UL << (i & 63))) != 0) node.Ptes[i] = (node.Ptes[i] | Pte.Writable) & ~Pte.HostCopy;
            }
            throw;
        }
    }

    /// <summary>
    /// Copies every node of <paramref name="frozen"/>, a table nobody changes any more (a
    /// snapshot's), into the empty table <paramref name="child"/>, without taking its locks: its
    /// leaves are shared as they are (tracked ones lack write access, or are host copies), so
    /// nothing in it changes either.
    /// </summary>
    /// <remarks>
    /// Without <paramref name="hostCopies"/> the frozen table's host copies become ordinary
    /// copy-on-write leaves (no W) in the child. If the visitor throws, the child table is left
    /// half-built for the caller to drop.
    /// </remarks>
    internal static void CopyFrozen(PageTable frozen, PageTable child, IForkVisitor visitor, bool hostCopies)
    {
        System.Diagnostics.Debug.Assert(frozen.Size == child.Size && child.Root.ValidCount == 0);
        CopyNode(frozen.Root, child.Root, Paging.NrLevels, 0, child, visitor, new List<(PtNode, ulong[])>(), lockSource: false,
            hostCopies ? Share.Frozen : Share.FrozenWithoutHostCopies, null);
    }

    /// <summary>What a copy makes of a tracked leaf.</summary>
    private enum Share
    {
        /// <summary>A fork's: W removed in both tables.</summary>
        WriteProtect,
        /// <summary>A snapshot's of a space with host copies: a writable leaf of a private page becomes a host copy, W kept; any other loses W.</summary>
        HostCopy,
        /// <summary>From a frozen table, as it is.</summary>
        Frozen,
        /// <summary>From a frozen table, its host copies made ordinary copy-on-write leaves.</summary>
        FrozenWithoutHostCopies,
    }

    private static ulong Shared(ulong pte, Share share, ulong va, Func<ulong, bool>? hostCopyAt)
    {
        if (Pte.IsUntracked(pte)) return pte;
        return share switch
        {
            Share.WriteProtect => pte & ~Pte.Writable,
            Share.HostCopy => Pte.IsHostCopy(pte) || (pte & Pte.Writable) == 0 ? pte : hostCopyAt!(va) ? pte | Pte.HostCopy : pte & ~Pte.Writable,
            Share.Frozen => pte,
            _ => Pte.IsHostCopy(pte) ? pte & ~(Pte.HostCopy | Pte.Writable) : pte,
        };
    }

    private static void CopyNode(PtNode src, PtNode dst, int level, ulong vaBase, PageTable child, IForkVisitor visitor,
        List<(PtNode, ulong[])> writeProtected, bool lockSource, Share share, Func<ulong, bool>? hostCopyAt)
    {
        ulong size = Paging.SizeAt(level);
        ulong[]? mask = null; // entries of src this call write-protected, to undo a refused fork
        try
        {
            CopyEntries(src, dst, level, vaBase, size, child, visitor, writeProtected, lockSource, share, hostCopyAt, ref mask);
        }
        finally
        {
            if (mask != null) writeProtected.Add((src, mask));
        }
    }

    private static void CopyEntries(PtNode src, PtNode dst, int level, ulong vaBase, ulong size, PageTable child, IForkVisitor visitor,
        List<(PtNode, ulong[])> writeProtected, bool lockSource, Share share, Func<ulong, bool>? hostCopyAt, ref ulong[]? mask)
    {
        if (level == 1 && visitor is INodeForkVisitor nodes)
        {
            // A last-level node in one go (the source node is locked, or frozen).
            Span<ulong> after = stackalloc ulong[Paging.EntriesPerNode];
            for (int i = 0; i < Paging.EntriesPerNode; i++)
            {
                ulong pte = src.Ptes[i];
                System.Diagnostics.Debug.Assert(!lockSource || share == Share.HostCopy || !Pte.IsHostCopy(pte), "host copies are dissolved before a fork");
                after[i] = Pte.IsPresent(pte) ? Shared(pte, share, vaBase + (ulong)i * Paging.PageSize, hostCopyAt) : 0;
            }
            nodes.Leaves(vaBase, src.Ptes, after);
            int present = 0;
            for (int i = 0; i < Paging.EntriesPerNode; i++)
            {
                if (after[i] == 0) continue;
                present++;
                if (after[i] != src.Ptes[i] && lockSource)
                {
                    (mask ??= new ulong[Paging.EntriesPerNode / 64])[i >> 6] |= 1UL << (i & 63);
                    src.Ptes[i] = after[i];
                }
            }
            // The copy's node is new, so empty: its entries in one go.
            System.Diagnostics.Debug.Assert(dst.ValidCount == 0);
            after.CopyTo(dst.Ptes);
            dst.ValidCount = present;
            return;
        }
        for (int i = 0; i < Paging.EntriesPerNode; i++)
        {
            ulong pte = src.Ptes[i];
            if (!Pte.IsPresent(pte)) continue;
            ulong va = vaBase + (ulong)i * size;
            if (!Pte.IsLast(pte, level))
            {
                PtNode srcChild = src.Children![i]!;
                if (lockSource) srcChild.Lock();
                try
                {
                    if (srcChild.ValidCount == 0) continue;
                    PtNode dstChild = child.NewNode(level - 1);
                    dst.SetChild(i, dstChild);
                    CopyNode(srcChild, dstChild, level - 1, va, child, visitor, writeProtected, lockSource, share, hostCopyAt);
                }
                finally
                {
                    if (lockSource) srcChild.Unlock();
                }
                continue;
            }
            System.Diagnostics.Debug.Assert(!lockSource || share == Share.HostCopy || !Pte.IsHostCopy(pte), "host copies are dissolved before a fork");
            ulong shared = Shared(pte, share, va, hostCopyAt);
            visitor.Leaf(va, size, pte, shared);
            if (shared != pte && lockSource)
            {
                (mask ??= new ulong[Paging.EntriesPerNode / 64])[i >> 6] |= 1UL << (i & 63);
                src.Ptes[i] = shared;
            }
            dst.SetLeaf(i, shared);
        }
    }
}

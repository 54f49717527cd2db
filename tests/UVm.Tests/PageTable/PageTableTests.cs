using NUnit.Framework;
using UVm.PageTable;
using Table = UVm.PageTable.PageTable;

namespace UVm.Tests.PageTable;

/// <summary>
/// The page table alone, driven through <see cref="PtCursor"/> directly: no space, no host, no
/// frame pool (entries name made-up physical addresses). Mapping, huge entries and their splits,
/// walking over holes, rights changes, node reclamation, the journal that undoes a batch, the
/// lock-free peek and the self-wait detection of node locks.
/// </summary>
public sealed class PageTableTests
{
    private const ulong Page = Paging.PageSize, Huge = Paging.HugePageSize, GiB = 1UL << 30;
    private const ulong Size = 4 * GiB;

    private static readonly PageProperty RW = PageProperty.New(PageFlags.RW);
    private static readonly PageProperty R = PageProperty.New(PageFlags.R);
    private static readonly PageProperty IoRW = new(PageFlags.RW, CachePolicy.Uncacheable, PrivilegedPageFlags.User | PrivilegedPageFlags.Avail1);

    /// <summary>A tracked base-page entry for <paramref name="paddr"/>.</summary>
    private static ulong Base(ulong paddr, PageProperty? prop = null) => Pte.Leaf(paddr, prop ?? RW, 1);

    private static PtCursor Cursor(Table pt, ulong start, ulong end) => new(pt, start, end, mutable: true);

    /// <summary>Runs <paramref name="use"/> with a cursor over <c>[start, end)</c>, then releases it.</summary>
    private static T With<T>(Table pt, ulong start, ulong end, Func<PtCursor, T> use)
    {
        PtCursor c = Cursor(pt, start, end);
        try
        {
            return use(c);
        }
        finally
        {
            c.Release();
        }
    }

    private static void MapPages(Table pt, ulong va, ulong paddr, int pages, PageProperty? prop = null) =>
        With(pt, va, va + (ulong)pages * Page, c =>
        {
            for (int i = 0; i < pages; i++) Assert.That(c.MapBase(Base(paddr + (ulong)i * Page, prop)), Is.Zero, "over a hole");
            return 0;
        });

    /// <summary>
    /// Maps <c>[va, va + len)</c> (inside one GiB) to untracked memory at <paramref name="paddr"/>
    /// through a cursor over that whole GiB; returns the sizes of the steps. (A cursor exactly one
    /// 2 MiB entry wide has the last-level node as its guard, so it maps base pages only.)
    /// </summary>
    private static List<ulong> MapUntracked(Table pt, ulong va, ulong len, ulong paddr) =>
        With(pt, va & ~(GiB - 1), (va & ~(GiB - 1)) + GiB, c =>
        {
            var steps = new List<ulong>();
            ulong end = va + len;
            c.Jump(va);
            while (c.Va < end)
            {
                (PtSlot slot, _) = c.MapUntrackedStep(paddr, end, IoRW);
                steps.Add(slot.Size);
                paddr += slot.Size;
            }
            return steps;
        });

    /// <summary>Every present leaf of the table, in address order: (va, level, entry).</summary>
    private static List<(ulong Va, int Level, ulong Entry)> Leaves(Table pt)
    {
        var leaves = new List<(ulong, int, ulong)>();
        void Walk(PtNode node, int level, ulong vaBase)
        {
            Assert.That(node.Level, Is.EqualTo(level));
            for (int i = 0; i < Paging.EntriesPerNode; i++)
            {
                ulong pte = node.Ptes[i];
                ulong va = vaBase + (ulong)i * Paging.PageSizeAt(level);
                if (!Pte.IsPresent(pte)) continue;
                if (Pte.IsLast(pte, level)) leaves.Add((va, level, pte));
                else Walk(node.Children![i]!, level - 1, va);
            }
        }
        Walk(pt.Root, Paging.NrLevels, 0);
        return leaves;
    }

    /// <summary>Nodes reachable from the root, checking each node's count of present entries on the way.</summary>
    private static int CountNodes(PtNode node)
    {
        int n = 1, present = 0;
        for (int i = 0; i < Paging.EntriesPerNode; i++)
        {
            ulong pte = node.Ptes[i];
            if (!Pte.IsPresent(pte)) continue;
            present++;
            if (!Pte.IsLast(pte, node.Level)) n += CountNodes(node.Children![i]!);
        }
        Assert.That(node.ValidCount, Is.EqualTo(present), $"a level-{node.Level} node counts its present entries");
        return n;
    }

    /// <summary>The table's node accounting agrees with its tree, and no node is left locked.</summary>
    private static void AssertConsistent(Table pt)
    {
        Assert.That(pt.NodeCount, Is.EqualTo(CountNodes(pt.Root)), "NodeCount is the number of nodes in the tree");
        AssertNothingLocked(pt.Root);
    }

    private static void AssertNothingLocked(PtNode node)
    {
        Assert.That(node.IsLockedForDebug, Is.False, $"a level-{node.Level} node is left locked");
        if (node.Children == null) return;
        foreach (PtNode? child in node.Children)
            if (child != null) AssertNothingLocked(child);
    }

    /// <summary>What page <paramref name="va"/> maps, whatever the entry's size: the page's address and the entry's other bits.</summary>
    private static (ulong Paddr, ulong Bits) PageView(Table pt, ulong va)
    {
        PtNode node = pt.Root;
        for (int level = Paging.NrLevels; ; level--)
        {
            ulong pte = node.Ptes[Paging.Index(va, level)];
            if (!Pte.IsPresent(pte)) return (0, 0);
            if (Pte.IsLast(pte, level))
                return (Pte.Paddr(pte) + (va & (Paging.PageSizeAt(level) - 1) & ~(Page - 1)), pte & ~Pte.AddrMask & ~Pte.Huge);
            node = node.Children![Paging.Index(va, level)]!;
        }
    }

    private static List<(ulong, ulong)> PageViews(Table pt, ulong start, ulong end)
    {
        var views = new List<(ulong, ulong)>();
        for (ulong va = start; va < end; va += Page) views.Add(PageView(pt, va));
        return views;
    }

    // ---- mapping ----------------------------------------------------------------------------

    [Test]
    public void Base_pages_are_mapped_with_a_node_per_level()
    {
        var pt = new Table(Size);
        Assert.That(pt.NodeCount, Is.EqualTo(1));
        long rootBytes = pt.FootprintBytes;
        MapPages(pt, 0x10_0000, 0x5000_0000, 4);
        Assert.That(pt.NodeCount, Is.EqualTo(4));
        Assert.That(pt.FootprintBytes, Is.GreaterThan(rootBytes));
        Assert.That(Leaves(pt), Is.EqualTo(Enumerable.Range(0, 4)
            .Select(i => (0x10_0000 + (ulong)i * Page, 1, Base(0x5000_0000 + (ulong)i * Page))).ToList()));
        With(pt, 0x10_0000, 0x10_0000 + 8 * Page, c =>
        {
            Assert.That(c.Query(), Is.EqualTo(new PtSlot(0x10_0000, Base(0x5000_0000), 1)));
            c.Jump(0x10_0000 + 5 * Page);
            Assert.That(c.Query().IsMapped, Is.False);
            return 0;
        });
        AssertConsistent(pt);
    }

    [Test]
    public void Mapping_over_a_page_returns_the_entry_it_replaced()
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x7000, 1);
        ulong old = With(pt, 0, Page, c => c.MapBase(Base(0x9000, R)));
        Assert.That(old, Is.EqualTo(Base(0x7000)));
        Assert.That(pt.PeekLeaf(0), Is.EqualTo(Base(0x9000, R)));
        AssertConsistent(pt);
    }

    [Test]
    public void Untracked_memory_is_mapped_with_2MiB_entries_wherever_both_addresses_are_aligned()
    {
        var pt = new Table(Size);
        List<ulong> steps = MapUntracked(pt, 2 * Huge, 2 * Huge + 2 * Page, 0x8000_0000);
        Assert.That(steps, Is.EqualTo(new[] { Huge, Huge, Page, Page }));
        ulong big = pt.PeekLeaf(2 * Huge + 5 * Page);
        Assert.That(big & Pte.Huge, Is.EqualTo(Pte.Huge));
        Assert.That(Pte.IsUntracked(big), Is.True);
        Assert.That(Pte.Paddr(big), Is.EqualTo(0x8000_0000UL));
        Assert.That(Pte.Paddr(pt.PeekLeaf(3 * Huge)), Is.EqualTo(0x8000_0000UL + Huge));
        Assert.That(Pte.Paddr(pt.PeekLeaf(4 * Huge + Page)), Is.EqualTo(0x8000_0000UL + 2 * Huge + Page));
        Assert.That(pt.PeekLeaf(4 * Huge + Page) & Pte.Huge, Is.Zero);
        Assert.That(pt.NodeCount, Is.EqualTo(4), "root, one 1 GiB node, one 2 MiB node and the last-level node of the tail");

        var unaligned = new Table(Size);
        Assert.That(MapUntracked(unaligned, 0, Huge, 0x8000_1000), Has.Count.EqualTo(512).And.All.EqualTo(Page),
            "a physical address off 2 MiB maps base pages only");
        AssertConsistent(pt);
        AssertConsistent(unaligned);
    }

    [Test]
    public void A_huge_entry_partly_unmapped_is_split_into_its_pages_first()
    {
        var pt = new Table(Size);
        MapUntracked(pt, Huge, Huge, 0x4000_0000);
        ulong huge = pt.PeekLeaf(Huge);
        long nodes = pt.NodeCount;
        PtSlot taken = With(pt, Huge + Page, Huge + 2 * Page, c => c.TakeNext(Page));
        Assert.That(taken.IsMapped, Is.True);
        Assert.That(taken.Level, Is.EqualTo(1));
        Assert.That(taken.Va, Is.EqualTo(Huge + Page));
        Assert.That(Pte.Paddr(taken.Entry), Is.EqualTo(0x4000_0000UL + Page));
        Assert.That(pt.NodeCount, Is.EqualTo(nodes + 1), "a last-level node holds the pieces");

        List<(ulong Va, int Level, ulong Entry)> leaves = Leaves(pt);
        Assert.That(leaves, Has.Count.EqualTo(511));
        foreach ((ulong va, int level, ulong entry) in leaves)
        {
            Assert.That(level, Is.EqualTo(1));
            Assert.That(entry, Is.EqualTo((huge & ~Pte.Huge & ~Pte.AddrMask) | (0x4000_0000 + (va - Huge))), $"the piece at 0x{va:x}");
        }
        AssertConsistent(pt);
    }

    [Test]
    public void A_huge_entry_partly_protected_is_split_and_only_the_covered_pages_change()
    {
        var pt = new Table(Size);
        MapUntracked(pt, 0, Huge, 0x4000_0000);
        PtSlot? slot = With(pt, 3 * Page, 4 * Page, c => c.ProtectNext(Page, p => p with { Flags = PageFlags.R }));
        Assert.That(slot, Is.Not.Null);
        Assert.That(slot!.Value.Va, Is.EqualTo(3 * Page));
        Assert.That(slot.Value.Level, Is.EqualTo(1));
        Assert.That(Pte.ToProp(pt.PeekLeaf(3 * Page)).Flags, Is.EqualTo(PageFlags.R));
        Assert.That(Pte.IsUntracked(pt.PeekLeaf(3 * Page)), Is.True);
        Assert.That(Pte.ToProp(pt.PeekLeaf(2 * Page)).Flags, Is.EqualTo(PageFlags.RW));
        Assert.That(Pte.ToProp(pt.PeekLeaf(4 * Page)).Flags, Is.EqualTo(PageFlags.RW));
        Assert.That(Leaves(pt), Has.Count.EqualTo(512));
        AssertConsistent(pt);
    }

    [Test]
    public void A_tracked_huge_entry_is_never_split()
    {
        var pt = new Table(Size);
        MapUntracked(pt, 0, Huge, 0x4000_0000);
        PtNode level2 = pt.Root.Children![0]!.Children![0]!;
        level2.Ptes[0] &= ~Pte.Untracked; // a tracked huge entry: the cursor never makes one
        PtCursor c = Cursor(pt, Page, 2 * Page);
        Assert.Throws<InvalidOperationException>(() => c.TakeNext(Page));
        c.Release();
        Assert.That(Leaves(pt), Has.Count.EqualTo(1), "nothing split");
        AssertConsistent(pt);
    }

    // ---- walking ----------------------------------------------------------------------------

    [Test]
    public void TakeNext_skips_holes_and_empty_nodes_and_stops_at_the_end()
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x1_0000, 1);
        MapPages(pt, 5 * Page, 0x2_0000, 1);
        MapPages(pt, 3 * Huge + 7 * Page, 0x3_0000, 1);
        MapPages(pt, GiB + Page, 0x4_0000, 1); // outside the cursor's range: kept
        // An empty last-level node in the way, as a reclamation that found a node busy leaves one.
        pt.Root.Children![0]!.Children![0]!.SetChild(1, pt.NewNode(1));
        Assert.That(pt.NodeCount, Is.EqualTo(8), "precondition");
        var taken = new List<PtSlot>();
        With(pt, 0, GiB, c =>
        {
            while (c.Va < GiB)
            {
                PtSlot s = c.TakeNext(GiB - c.Va);
                if (!s.IsMapped)
                {
                    Assert.That(c.Va, Is.EqualTo(GiB), "a step that finds nothing ends at the end");
                    break;
                }
                taken.Add(s);
            }
            return 0;
        });
        Assert.That(taken.Select(s => (s.Va, Pte.Paddr(s.Entry))), Is.EqualTo(new[]
        {
            (0UL, 0x1_0000UL), (5 * Page, 0x2_0000UL), (3 * Huge + 7 * Page, 0x3_0000UL),
        }));
        Assert.That(Leaves(pt).Select(l => l.Va), Is.EqualTo(new[] { GiB + Page }));
        Assert.That(pt.NodeCount, Is.EqualTo(4), "only the path to the page left");
        AssertConsistent(pt);
    }

    [Test]
    public void FindNext_stops_at_the_first_mapped_page_or_returns_null()
    {
        var pt = new Table(Size);
        MapPages(pt, 9 * Huge + 3 * Page, 0x1000, 1);
        With(pt, 0, GiB, c =>
        {
            Assert.That(c.FindNext(GiB), Is.EqualTo(9 * Huge + 3 * Page));
            Assert.That(c.Va, Is.EqualTo(9 * Huge + 3 * Page));
            c.MoveForward();
            Assert.That(c.FindNext(GiB - c.Va), Is.Null);
            return 0;
        });
        AssertConsistent(pt);
    }

    [Test]
    public void ProtectNext_changes_each_mapped_slot_once_and_keeps_addresses()
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x1_0000, 2);
        MapPages(pt, 10 * Page, 0x2_0000, 1);
        MapUntracked(pt, Huge, Huge, 0x4000_0000);
        var changed = new List<PtSlot>();
        With(pt, 0, 4 * Huge, c =>
        {
            while (c.ProtectNext(4 * Huge - c.Va, p => p with { Flags = PageFlags.R | PageFlags.X }) is { } s) changed.Add(s);
            Assert.That(c.Va, Is.EqualTo(4 * Huge));
            return 0;
        });
        Assert.That(changed.Select(s => (s.Va, s.Level)), Is.EqualTo(new[] { (0UL, 1), (Page, 1), (10 * Page, 1), (Huge, 2) }),
            "a wholly covered huge entry changes whole");
        foreach (PtSlot s in changed)
        {
            Assert.That(pt.PeekLeaf(s.Va), Is.EqualTo(s.Entry));
            Assert.That(Pte.ToProp(s.Entry).Flags, Is.EqualTo(PageFlags.R | PageFlags.X));
        }
        Assert.That(Pte.Paddr(pt.PeekLeaf(Page)), Is.EqualTo(0x1_1000UL));
        Assert.That(Pte.IsUntracked(pt.PeekLeaf(Huge)), Is.True);
        Assert.That(Pte.Paddr(pt.PeekLeaf(Huge)), Is.EqualTo(0x4000_0000UL));
        AssertConsistent(pt);
    }

    // ---- node reclamation -------------------------------------------------------------------

    [Test]
    public void Nodes_are_reclaimed_as_their_last_entry_goes()
    {
        var pt = new Table(Size);
        long rootBytes = pt.FootprintBytes;
        MapPages(pt, 0, 0x1000, 1);
        MapPages(pt, Huge, 0x2000, 1);
        MapPages(pt, GiB, 0x3000, 1);
        Assert.That(pt.NodeCount, Is.EqualTo(1 + 1 + 2 + 3), "root; one 1 GiB node; two 2 MiB nodes; three last-level nodes");

        With(pt, 0, Page, c => c.TakeNext(Page)); // the cursor's own node: reclaimed after release
        Assert.That(pt.NodeCount, Is.EqualTo(6), "its parent still holds the page at 2 MiB");
        With(pt, Huge, Huge + Page, c => c.TakeNext(Page));
        Assert.That(pt.NodeCount, Is.EqualTo(4), "the emptied parents went too, up to the root's entry");
        With(pt, 0, 2 * GiB, c => c.TakeNext(2 * GiB)); // a wide cursor drops the nodes it leaves
        Assert.That(pt.NodeCount, Is.EqualTo(1));
        Assert.That(pt.FootprintBytes, Is.EqualTo(rootBytes));
        AssertConsistent(pt);
    }

    [Test]
    public void A_cursor_over_an_empty_region_leaves_no_node_behind()
    {
        var pt = new Table(Size);
        PtCursor c = new(pt, 5 * Huge + Page, 5 * Huge + 2 * Page, mutable: false);
        Assert.That(pt.NodeCount, Is.EqualTo(4), "the cursor builds the path to its range");
        Assert.That(c.GuardLevel, Is.EqualTo(1));
        Assert.That(c.Query(), Is.EqualTo(new PtSlot(5 * Huge, 0, 2)), "an empty node is one hole");
        c.Release();
        Assert.That(pt.NodeCount, Is.EqualTo(1));
        AssertConsistent(pt);
    }

    [Test]
    public void Reclamation_never_waits_for_a_node_a_cursor_holds()
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x1000, 1);
        PtCursor holder = Cursor(pt, 0, GiB);
        Assert.That(holder.GuardLevel, Is.EqualTo(2), "the holder keeps the 2 MiB node");
        // Reclaiming below it needs the node the holder (this very thread) keeps: give up, at once.
        Assert.That(pt.ReclaimIfEmpty(0, 1), Is.False);
        Assert.That(pt.Root.IsLockedForDebug, Is.False, "nothing taken on the way is kept");
        Assert.That(pt.Root.Children![0]!.IsLockedForDebug, Is.False);
        Assert.That(holder.GuardNode.IsLockedForDebug, Is.True);
        holder.TakeNext(GiB);
        holder.Release();
        Assert.That(pt.NodeCount, Is.EqualTo(1), "the holder reclaimed the path itself");
        AssertConsistent(pt);
    }

    // ---- the journal ------------------------------------------------------------------------

    [Test]
    public void Undoing_the_journal_restores_every_leaf_exactly()
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x10_0000, 8);
        MapPages(pt, 3 * Huge, 0x20_0000, 3, R);
        MapUntracked(pt, 6 * Huge, Huge, 0x4000_0000);
        var before = Leaves(pt);
        long nodes = pt.NodeCount;

        var undone = new List<(PtChangeKind Kind, ulong Old, ulong New)>();
        With(pt, 0, GiB, c =>
        {
            c.StartJournal();
            c.Jump(2 * Page);
            for (int i = 0; i < 12; i++) c.MapBase(Base(0x90_0000 + (ulong)i * Page)); // 6 over pages, 6 over holes
            c.Jump(3 * Huge);
            c.TakeNext(Page);
            const ulong protectEnd = 3 * Huge + 3 * Page;
            while (c.Va < protectEnd && c.ProtectNext(protectEnd - c.Va, p => p with { Flags = PageFlags.RW }) is not null) { }
            c.Jump(6 * Huge);
            c.ProtectNext(Huge, p => p with { Flags = PageFlags.None });
            c.Jump(9 * Huge);
            while (c.Va < 9 * Huge + 4 * Page) c.MapUntrackedStep(0x8000_0000 + (c.Va - 9 * Huge), 9 * Huge + 4 * Page, IoRW);
            Assert.That(Leaves(pt), Is.Not.EqualTo(before), "precondition: the batch changed the table");
            c.UndoJournal((kind, old, @new) => undone.Add((kind, old, @new)));
            return 0;
        });
        Assert.That(Leaves(pt), Is.EqualTo(before));
        Assert.That(pt.NodeCount, Is.EqualTo(nodes), "the nodes built for the batch went with it");
        AssertConsistent(pt);

        Assert.That(undone, Has.Count.EqualTo(12 + 1 + 2 + 1 + 4), "one call per leaf changed");
        Assert.That(undone.Count(u => u.Kind == PtChangeKind.Map), Is.EqualTo(16));
        Assert.That(undone.Count(u => u.Kind == PtChangeKind.Unmap), Is.EqualTo(1));
        Assert.That(undone.Count(u => u.Kind == PtChangeKind.Protect), Is.EqualTo(3));
        Assert.That(undone.Where(u => u.Kind == PtChangeKind.Map && u.Old != 0).Select(u => Pte.Paddr(u.Old)),
            Is.EqualTo(Enumerable.Range(2, 6).Select(i => 0x10_0000 + (ulong)i * Page).Reverse()), "newest first, with the entries replaced");
    }

    [Test]
    public void Undoing_the_journal_rebuilds_nodes_reclaimed_during_the_batch()
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x10_0000, 4);
        MapPages(pt, 2 * Huge, 0x20_0000, 2);
        MapPages(pt, GiB + 5 * Page, 0x30_0000, 1);
        var before = Leaves(pt);
        long nodes = pt.NodeCount;
        With(pt, 0, 2 * GiB, c =>
        {
            c.StartJournal();
            while (c.TakeNext(2 * GiB - c.Va).IsMapped) { }
            Assert.That(pt.NodeCount, Is.EqualTo(2), "precondition: every node under the cursor's guard was reclaimed");
            Assert.That(Leaves(pt), Is.Empty);
            c.UndoJournal((_, _, _) => { });
            return 0;
        });
        Assert.That(Leaves(pt), Is.EqualTo(before));
        Assert.That(pt.NodeCount, Is.EqualTo(nodes));
        AssertConsistent(pt);
    }

    [Test]
    public void Undoing_the_journal_after_a_split_restores_what_every_page_maps()
    {
        var pt = new Table(Size);
        MapUntracked(pt, 0, Huge, 0x4000_0000);
        MapUntracked(pt, Huge, Huge, 0x6000_0000);
        List<(ulong, ulong)> views = PageViews(pt, 0, 2 * Huge);
        With(pt, 0, GiB, c =>
        {
            c.StartJournal();
            c.Jump(5 * Page);
            c.TakeNext(2 * Page);                                          // splits the first, takes page 5
            c.ProtectNext(Page, p => p with { Flags = PageFlags.R });
            c.Jump(Huge + 100 * Page);
            c.MapBase(Base(0x1234_5000));                                  // splits the second
            c.UndoJournal((_, _, _) => { });
            return 0;
        });
        // Splits are structure, not mappings: the pieces stay, and each maps what the huge entry did.
        Assert.That(PageViews(pt, 0, 2 * Huge), Is.EqualTo(views));
        Assert.That(Leaves(pt), Has.Count.EqualTo(1024));
        AssertConsistent(pt);
    }

    [Test]
    public void Undoing_a_change_of_a_huge_entry_made_before_its_split_puts_the_huge_entry_back()
    {
        var pt = new Table(Size);
        MapUntracked(pt, 0, Huge, 0x4000_0000);
        var before = Leaves(pt);
        long nodes = pt.NodeCount;
        With(pt, 0, GiB, c =>
        {
            c.StartJournal();
            c.ProtectNext(Huge, p => p with { Flags = PageFlags.R }); // the whole huge entry
            c.Jump(7 * Page);
            c.TakeNext(Page);                                          // then a split of it
            c.Jump(Huge);
            c.MapUntrackedStep(0x6000_0000, 2 * Huge, IoRW);           // and a huge entry over a hole
            c.UndoJournal((_, _, _) => { });
            return 0;
        });
        Assert.That(Leaves(pt), Is.EqualTo(before), "the table of pieces is dropped for the huge entry");
        Assert.That(pt.NodeCount, Is.EqualTo(nodes));
        AssertConsistent(pt);
    }

    [Test]
    public void A_committed_journal_is_forgotten()
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x10_0000, 2);
        int calls = 0;
        With(pt, 0, Huge, c =>
        {
            c.StartJournal();
            c.MapBase(Base(0x50_0000));
            c.TakeNext(Huge - c.Va);
            c.CommitJournal();
            var committed = Leaves(pt);
            c.UndoJournal((_, _, _) => calls++);
            Assert.That(Leaves(pt), Is.EqualTo(committed), "nothing to undo");

            c.Jump(0);
            c.ProtectNext(Page, p => p with { Flags = PageFlags.R });
            c.UndoJournal((_, _, _) => calls++);
            Assert.That(Leaves(pt), Is.EqualTo(committed), "only what followed the commit is undone");
            return 0;
        });
        Assert.That(calls, Is.EqualTo(1));
        Assert.That(Leaves(pt), Is.EqualTo(new[] { (0UL, 1, Base(0x50_0000)) }));
        AssertConsistent(pt);
    }

    [Test]
    public void Without_a_journal_nothing_is_undone()
    {
        var pt = new Table(Size);
        int calls = 0;
        With(pt, 0, Huge, c =>
        {
            c.MapBase(Base(0x1000));
            c.UndoJournal((_, _, _) => calls++);
            return 0;
        });
        Assert.That(calls, Is.Zero);
        Assert.That(pt.PeekLeaf(0), Is.EqualTo(Base(0x1000)));
    }

    [Test]
    public void A_cursor_goes_on_after_an_undo_and_releases_cleanly()
    {
        var pt = new Table(Size);
        MapPages(pt, Huge, 0x10_0000, 1);
        With(pt, 0, GiB, c =>
        {
            c.StartJournal();
            c.Jump(3 * Huge);
            c.MapBase(Base(0x20_0000));
            c.UndoJournal((_, _, _) => { });
            c.Jump(0);
            Assert.That(c.FindNext(GiB), Is.EqualTo(Huge));
            c.Jump(5 * Huge);
            c.MapBase(Base(0x30_0000));
            return 0;
        });
        Assert.That(Leaves(pt).Select(l => l.Va), Is.EqualTo(new[] { Huge, 5 * Huge }));
        AssertConsistent(pt);
    }

    // ---- reading without locks --------------------------------------------------------------

    [Test]
    public void PeekLeaf_reads_without_locks_even_under_a_cursor_of_the_calling_thread()
    {
        var pt = new Table(Size);
        MapPages(pt, Page, 0x7000, 1);
        MapUntracked(pt, 2 * Huge, Huge, 0x4000_0000);
        PtCursor holder = Cursor(pt, 0, GiB);
        try
        {
            Assert.That(holder.GuardNode.IsLockedForDebug, Is.True, "precondition: the table is held");
            Assert.That(pt.PeekLeaf(Page + 123), Is.EqualTo(Base(0x7000)));
            Assert.That(pt.PeekLeaf(0), Is.Zero, "a hole in a node");
            Assert.That(pt.PeekLeaf(5 * Huge), Is.Zero, "no node");
            Assert.That(pt.PeekLeaf(2 * Huge + 77 * Page), Is.EqualTo(Pte.Leaf(0x4000_0000, IoRW, 2) | Pte.Untracked), "the huge entry");
            Assert.That(pt.PeekLeaf(Size), Is.Zero, "past the end");
            Assert.That(pt.PeekLeaf(ulong.MaxValue), Is.Zero);
        }
        finally
        {
            holder.Release();
        }
        AssertConsistent(pt);
    }

    // ---- self-wait detection ----------------------------------------------------------------

    [Test]
    public void A_node_lock_taken_twice_by_one_thread_throws_and_stays_held_once()
    {
        var node = new PtNode(1);
        node.Lock();
        Assert.Throws<InvalidOperationException>(node.Lock);
        Assert.That(node.IsLockedForDebug, Is.True);
        Assert.That(node.TryLock(), Is.False, "ours: TryLock gives up at once");
        node.Unlock();
        Assert.That(node.IsLockedForDebug, Is.False);
        Assert.That(node.TryLock(), Is.True);
        node.Unlock();
    }

    [TestCase(0UL, 4 * Huge, 2)] // its way down passes the held node
    [TestCase(0UL, Page, 1)] // its guard would be the held node
    public void A_cursor_that_needs_a_node_its_thread_holds_throws_and_holds_nothing(ulong heldStart, ulong heldEnd, int heldLevel)
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x1000, 1);
        PtCursor holder = Cursor(pt, heldStart, heldEnd);
        Assert.That(holder.GuardLevel, Is.EqualTo(heldLevel), "precondition");
        Assert.Throws<InvalidOperationException>(() => Cursor(pt, 0, 2 * Page));
        var path = new List<PtNode> { pt.Root, pt.Root.Children![0]!, pt.Root.Children![0]!.Children![0]! };
        path.Add(path[2].Children![0]!);
        for (int level = Paging.NrLevels; level >= 1; level--)
        {
            bool held = level == heldLevel;
            Assert.That(path[Paging.NrLevels - level].IsLockedForDebug, Is.EqualTo(held),
                held ? "the holder still holds its node" : $"the failed cursor let go of the level-{level} node");
        }
        holder.Release();
        AssertConsistent(pt);
        Assert.That(With(pt, 0, 2 * Page, c => c.TakeNext(2 * Page)).IsMapped, Is.True, "once released, the node is free");
        AssertConsistent(pt);
    }

    [Test]
    public void A_cursor_step_into_a_node_its_thread_holds_throws_and_the_cursor_still_releases()
    {
        var pt = new Table(Size);
        MapPages(pt, 0, 0x1000, 1);
        MapPages(pt, Page, 0x2000, 1);
        PtCursor narrow = Cursor(pt, Page, 2 * Page); // the last-level node
        PtCursor wide = Cursor(pt, 0, 2 * Huge);      // stops above it: the 2 MiB node
        Assert.That(wide.GuardLevel, Is.EqualTo(2));
        Assert.Throws<InvalidOperationException>(() => wide.TakeNext(2 * Huge));
        wide.Release();
        Assert.That(pt.Root.Children![0]!.Children![0]!.IsLockedForDebug, Is.False, "the wide cursor holds nothing");
        Assert.That(narrow.GuardNode.IsLockedForDebug, Is.True);
        narrow.Release();
        Assert.That(Leaves(pt), Has.Count.EqualTo(2), "nothing was taken");
        AssertConsistent(pt);
    }
}

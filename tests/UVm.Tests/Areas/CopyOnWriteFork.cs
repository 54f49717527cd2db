using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Io;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Areas;

/// <summary>
/// <see cref="AddressSpace.Fork"/>: the child sees the parent's memory as it was, nothing is
/// copied at fork, a write copies the frame (or takes it over when no other space holds it),
/// and from then on every space sees only its own writes.
/// </summary>
[TestFixture, NonParallelizable, CancelAfter(120_000)]
public sealed class CopyOnWriteFork : AreaFixture
{
    private const int AreaPages = 64;

    /// <summary>A lazy area of <see cref="AreaPages"/> whose first 32 pages hold <c>fill</c> (the rest never touched).</summary>
    private ulong AreaWithData(byte fill = 0x5A)
    {
        ulong va = MapLazy(Parent, AreaPages);
        Write(Parent, va, Filled(fill, (int)(32 * Page)));
        return va;
    }

    [Test]
    public void The_child_has_the_same_areas_and_sees_the_parents_data()
    {
        ulong va = AreaWithData();
        Parent.FaultAroundPages = 4;

        AddressSpace child = ForkOf(Parent);

        Assert.That(child.Areas, Is.EqualTo(Parent.Areas));
        Assert.That(child.FaultAroundPages, Is.EqualTo(4));
        Assert.That(Read(child, va, (int)(32 * Page)), Is.EqualTo(Filled(0x5A, (int)(32 * Page))));
        Assert.That(child.Space.SpuriousFaults + child.Space.HandledFaults, Is.Zero, "the child's host mappings were installed at fork");
        Assert.That(Read(child, va + 32 * Page, (int)(32 * Page)), Is.EqualTo(new byte[32 * Page]), "untouched pages are demand-zero in the child too");
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Fork_copies_nothing_and_shares_every_frame_read_only()
    {
        ulong va = AreaWithData();
        long before = Pool.FramesInUse;

        AddressSpace child = ForkOf(Parent);

        Assert.That(Pool.FramesInUse, Is.EqualTo(before));
        Dictionary<ulong, PageInfo> p = Pages(Parent, Span(va, AreaPages * Page)), c = Pages(child, Span(va, AreaPages * Page));
        Assert.That(c.Keys.Order(), Is.EqualTo(p.Keys.Order()));
        foreach ((ulong page, PageInfo info) in p)
        {
            Assert.That(c[page].Paddr, Is.EqualTo(info.Paddr), $"page 0x{page:x}");
            Assert.That(info.References, Is.EqualTo(2));
            Assert.That(info.Flags, Is.EqualTo(PageFlags.R), "write-protected in the parent");
            Assert.That(c[page].Flags, Is.EqualTo(PageFlags.R), "write-protected in the child");
        }
        Assert.That(child.Stats.CopyOnWriteCopies + Parent.Stats.CopyOnWriteCopies, Is.Zero);
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void A_write_in_the_parent_copies_the_page_and_the_child_keeps_the_old_contents()
    {
        ulong va = AreaWithData();
        AddressSpace child = ForkOf(Parent);

        WriteU64(Parent, va + 3 * Page, 111);

        Assert.That(ReadU64(Parent, va + 3 * Page), Is.EqualTo(111UL));
        Assert.That(Read(child, va + 3 * Page, 8), Is.EqualTo(Filled(0x5A, 8)));
        Assert.That(Parent.Stats.CopyOnWriteCopies, Is.EqualTo(1));
        Assert.That(Read(Parent, va + 3 * Page + 8, (int)Page - 8), Is.EqualTo(Filled(0x5A, (int)Page - 8)), "the copy holds the rest of the page");
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void A_write_in_the_child_copies_the_page_and_the_parent_keeps_the_old_contents()
    {
        ulong va = AreaWithData();
        AddressSpace child = ForkOf(Parent);

        WriteU64(child, va + 7 * Page, 222);

        Assert.That(ReadU64(child, va + 7 * Page), Is.EqualTo(222UL));
        Assert.That(Read(Parent, va + 7 * Page, 8), Is.EqualTo(Filled(0x5A, 8)));
        Assert.That(child.Stats.CopyOnWriteCopies, Is.EqualTo(1));
        Assert.That(Parent.Stats.CopyOnWriteCopies, Is.Zero);
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Reference_counts_fall_to_one_after_both_sides_wrote()
    {
        ulong va = AreaWithData();
        Parent.FaultAroundPages = 1; // page by page: each write fault resolves its own page only
        AddressSpace child = ForkOf(Parent);
        long shared = Pool.FramesInUse;

        for (int i = 0; i < 8; i++) WriteU64(Parent, va + (ulong)i * Page, 1);
        for (int i = 0; i < 8; i++) WriteU64(child, va + (ulong)i * Page, 2);

        Dictionary<ulong, PageInfo> p = Pages(Parent, Span(va, 8 * Page)), c = Pages(child, Span(va, 8 * Page));
        foreach (ulong page in p.Keys)
        {
            Assert.That(p[page].References, Is.EqualTo(1));
            Assert.That(c[page].References, Is.EqualTo(1));
            Assert.That(p[page].Paddr, Is.Not.EqualTo(c[page].Paddr));
            Assert.That(p[page].Flags, Is.EqualTo(PageFlags.RW));
            Assert.That(c[page].Flags, Is.EqualTo(PageFlags.RW));
        }
        Assert.That(Parent.Stats.CopyOnWriteCopies, Is.EqualTo(8), "the parent wrote first: it copied");
        Assert.That(child.Stats.CopyOnWriteTakeovers, Is.EqualTo(8), "the child then held the last reference: it took the frames over");
        Assert.That(child.Stats.CopyOnWriteCopies, Is.Zero);
        Assert.That(Pool.FramesInUse, Is.EqualTo(shared + 8));
        Assert.That(ReadU64(Parent, va), Is.EqualTo(1UL));
        Assert.That(ReadU64(child, va), Is.EqualTo(2UL));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void A_write_after_the_other_space_is_disposed_takes_the_frame_over_without_copying()
    {
        ulong va = AreaWithData();
        AddressSpace child = ForkOf(Parent);
        Dictionary<ulong, PageInfo> before = Pages(Parent, Span(va, 32 * Page));
        child.Dispose();
        long frames = Pool.FramesInUse;

        Write(Parent, va, Filled(0x11, (int)(32 * Page)));

        Assert.That(Parent.Stats.CopyOnWriteTakeoverPages, Is.EqualTo(32));
        Assert.That(Parent.Stats.CopyOnWriteTakeovers, Is.EqualTo(32 / Parent.FaultAroundPages), "one fault per fault-around window");
        Assert.That(Parent.Stats.CopyOnWriteCopies + Parent.Stats.CopyOnWritePages, Is.Zero);
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames));
        Dictionary<ulong, PageInfo> after = Pages(Parent, Span(va, 32 * Page));
        foreach ((ulong page, PageInfo info) in after)
        {
            Assert.That(info.Paddr, Is.EqualTo(before[page].Paddr), "the same frame, now writable");
            Assert.That(info.Flags, Is.EqualTo(PageFlags.RW));
            Assert.That(info.References, Is.EqualTo(1));
        }
        Assert.That(Read(Parent, va, (int)(32 * Page)), Is.EqualTo(Filled(0x11, (int)(32 * Page))));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_page_first_touched_after_fork_is_private_to_the_space_that_touched_it()
    {
        ulong va = AreaWithData();
        AddressSpace child = ForkOf(Parent);

        WriteU64(Parent, va + 40 * Page, 40);

        Assert.That(ReadU64(child, va + 40 * Page), Is.Zero);
        Assert.That(ReadU64(Parent, va + 40 * Page), Is.EqualTo(40UL));
        Assert.That(PageAt(Parent, va + 40 * Page)!.Value.Paddr, Is.Not.EqualTo(PageAt(child, va + 40 * Page)!.Value.Paddr));
        Assert.That(child.Stats.DemandZeroFaults, Is.EqualTo(1));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Zero_frames_are_in_use_after_parent_and_child_are_disposed()
    {
        AreaWithData();
        AddressSpace child = ForkOf(Parent);
        AddressSpace grandchild = ForkOf(child);
        Write(child, Parent.Areas[0].Range.Start, Filled(1, (int)(40 * Page)));
        Write(grandchild, Parent.Areas[0].Range.Start + Page, Filled(2, (int)(60 * Page)));
        Write(Parent, Parent.Areas[0].Range.Start + 20 * Page, Filled(3, (int)Page));

        Parent.Dispose();
        Assert.That(Pool.FramesInUse, Is.GreaterThan(0));
        child.Dispose();
        grandchild.Dispose();

        Assert.That(Pool.FramesInUse, Is.Zero);
        Assert.That(Pool.ReservedChunks, Is.Zero);
    }

    [Test]
    public void The_child_outlives_the_parent_with_its_memory_intact()
    {
        ulong va = AreaWithData(0x77);
        AddressSpace child = ForkOf(Parent);
        Parent.Dispose();

        Assert.That(Read(child, va, (int)(32 * Page)), Is.EqualTo(Filled(0x77, (int)(32 * Page))));
        Write(child, va, Filled(0x78, (int)(32 * Page)));
        Assert.That(child.Stats.CopyOnWriteTakeoverPages, Is.EqualTo(32));
        Assert.That(child.Stats.CopyOnWriteCopies + child.Stats.CopyOnWritePages, Is.Zero);
        AssertHostMirrors(child);
    }

    [Test]
    public void Grandchildren_share_until_they_write()
    {
        ulong va = AreaWithData(0x30);
        Parent.FaultAroundPages = 1; // page by page: page 1 stays shared while page 0 is written
        AddressSpace child = ForkOf(Parent);
        AddressSpace grandchild = ForkOf(child);

        Assert.That(PageAt(grandchild, va)!.Value.References, Is.EqualTo(3));
        WriteU64(grandchild, va, 3);
        WriteU64(child, va + Page, 2);

        Assert.That(ReadU64(grandchild, va), Is.EqualTo(3UL));
        Assert.That(Read(child, va, 8), Is.EqualTo(Filled(0x30, 8)));
        Assert.That(Read(Parent, va, 8), Is.EqualTo(Filled(0x30, 8)));
        Assert.That(ReadU64(child, va + Page), Is.EqualTo(2UL));
        Assert.That(Read(grandchild, va + Page, 8), Is.EqualTo(Filled(0x30, 8)));
        Assert.That(Read(Parent, va + Page, 8), Is.EqualTo(Filled(0x30, 8)));
        Assert.That(PageAt(Parent, va)!.Value.References, Is.EqualTo(2), "parent and child still share page 0");
        AssertHostMirrors(Parent, child, grandchild);
    }

    [Test, CancelAfter(120_000)]
    public void Fork_isolation_holds_both_ways_over_many_rounds_grandchildren_included()
    {
        const int Rounds = 50;
        const int Bytes = AreaPages * (int)Page;
        var rng = new Random(Seeds.For("fork isolation"));
        ulong va = MapLazy(Parent, AreaPages);
        var spaces = new List<(AddressSpace Space, byte[] Model)> { (Parent, new byte[Bytes]) };

        for (int round = 0; round < Rounds; round++)
        {
            // Now and then a live space forks: its child starts with a copy of its model.
            if (round % 10 == 5 && spaces.Count < 6)
            {
                var (origin, model) = spaces[rng.Next(spaces.Count)];
                spaces.Add((ForkOf(origin), (byte[])model.Clone()));
            }
            foreach (var (space, model) in spaces)
            {
                for (int w = 0; w < 4; w++)
                {
                    int offset = rng.Next(Bytes);
                    int length = Math.Min(Bytes - offset, 1 + rng.Next(3 * (int)Page)); // may cross pages
                    byte[] data = new byte[length];
                    rng.NextBytes(data);
                    Write(space, va + (ulong)offset, data);
                    data.CopyTo(model, offset);
                }
            }
            foreach (var (space, model) in spaces)
            {
                byte[] actual = Read(space, va, Bytes);
                int diff = actual.AsSpan().CommonPrefixLength(model);
                Assert.That(diff, Is.EqualTo(Bytes), $"round {round}, space #{spaces.FindIndex(s => s.Space == space)}: first difference at offset 0x{diff:x}");
            }
            if (round % 10 == 9)
                AssertHostMirrors(spaces.Select(s => s.Space).ToArray());
        }

        Assert.That(spaces.Count, Is.EqualTo(6));
        Assert.That(spaces.Sum(s => s.Space.Space.UnresolvedFaults), Is.Zero);
        Assert.That(spaces.Sum(s => s.Space.Stats.CopyOnWriteCopies), Is.GreaterThan(0));
        foreach (var (space, _) in spaces)
            foreach (PageInfo page in Pages(space, Span(va, (ulong)Bytes)).Values)
                Assert.That(page.References, Is.LessThanOrEqualTo(spaces.Count));
    }

    [Test, CancelAfter(60_000)]
    public void Concurrent_write_faults_in_parent_and_child_keep_both_isolated()
    {
        const int Threads = 4, Pages = 256;
        ulong va = MapLazy(Parent, Pages);
        Write(Parent, va, Filled(0xEE, (int)(Pages * Page)));
        Parent.FaultAroundPages = 1; // one write fault per page and space, racing page by page
        AddressSpace child = ForkOf(Parent);
        var spaces = new[] { Parent, child };
        Exception? failure = null;

        // Threads 0 and 1 write the parent, 2 and 3 the child; thread t takes the pages i with i % 2 == t % 2,
        // so every shared page is written by one thread in each space at about the same time.
        var threads = Enumerable.Range(0, Threads).Select(t => Deadlines.Background($"writer {t}", () =>
        {
            try
            {
                AddressSpace s = spaces[t / 2];
                for (int i = t % 2; i < Pages; i += 2) WriteU64(s, va + (ulong)i * Page, (ulong)(t / 2 * 1000 + i));
            }
            catch (Exception e)
            {
                failure ??= e;
            }
            finally
            {
                Spaces.VmSpace.Deactivate();
            }
        })).ToArray();
        foreach (Thread th in threads) th.Start();
        Deadlines.JoinAll(threads);

        Assert.That(failure, Is.Null);
        for (int i = 0; i < Pages; i++)
        {
            Assert.That(ReadU64(Parent, va + (ulong)i * Page), Is.EqualTo((ulong)i), $"parent page {i}");
            Assert.That(ReadU64(child, va + (ulong)i * Page), Is.EqualTo((ulong)(1000 + i)), $"child page {i}");
            Assert.That(Read(child, va + (ulong)i * Page + 8, 8), Is.EqualTo(Filled(0xEE, 8)));
        }
        long copies = Parent.Stats.CopyOnWriteCopies + child.Stats.CopyOnWriteCopies;
        long takeovers = Parent.Stats.CopyOnWriteTakeovers + child.Stats.CopyOnWriteTakeovers;
        Assert.That(copies + takeovers, Is.EqualTo(2 * Pages), "one write fault per page and space");
        Assert.That(copies, Is.GreaterThanOrEqualTo(Pages), "the first writer of a page copies it; the second copies too if it raced, else takes over");
        Assert.That(Pool.FramesInUse, Is.EqualTo(2 * Pages));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Populated_and_read_only_areas_fork_too()
    {
        ulong pop = Parent.Map(8 * Page, Populated, Anywhere(PageFlags.RW, Huge));
        Write(Parent, pop, Filled(4, (int)(8 * Page)));
        ulong ro = MapLazy(Parent, 4, PageFlags.R);
        Read(Parent, ro, 8);

        AddressSpace child = ForkOf(Parent);

        Assert.That(Read(child, pop, (int)(8 * Page)), Is.EqualTo(Filled(4, (int)(8 * Page))));
        AssertFault(TryWrite(child, ro, Filled(1, 8)), ro, PageFaultKind.Protection);
        Write(child, pop, Filled(5, 8));
        Assert.That(Read(Parent, pop, 8), Is.EqualTo(Filled(4, 8)));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Forking_an_empty_space_gives_an_empty_child()
    {
        AddressSpace child = ForkOf(Parent);

        Assert.That(child.Areas, Is.Empty);
        Assert.That(child.Space.CountHostMappings(), Is.EqualTo(1), "the whole arena reserved");
        AssertHostMirrors(child);
    }

    [Test]
    public void A_disposed_space_cannot_fork()
    {
        AddressSpace other = NewAddressSpace();
        other.Dispose();

        Assert.Throws<ObjectDisposedException>(() => other.Fork());
    }

    [Test]
    public void With_the_pool_exhausted_a_copy_on_write_fault_fails_the_copy_at_the_exact_byte()
    {
        // 40 MiB written, then forked: the child's copies get the 24 MiB left of the 64 MiB pool.
        ulong va = Parent.Map(40 * MiB, Lazy, Anywhere(PageFlags.RW, Huge));
        Write(Parent, va, Filled(0x10, (int)(40 * MiB)));
        AddressSpace child = ForkOf(Parent);

        CopyResult r = TryWrite(child, va, Filled(0x20, (int)(40 * MiB)));

        AssertFault(r, va + 24 * MiB, PageFaultKind.Protection, bytesDone: 24 * MiB);
        Assert.That(child.Stats.CopyOnWritePages, Is.EqualTo((long)(24 * MiB / Page)));
        Assert.That(Read(child, va + 24 * MiB, (int)Page), Is.EqualTo(Filled(0x10, (int)Page)), "the failed page still shows the shared contents");
        Assert.That(Read(Parent, va, (int)(40 * MiB)), Is.EqualTo(Filled(0x10, (int)(40 * MiB))));
        AssertHostMirrors(Parent, child);

        Parent.Dispose(); // the child now holds the last reference of the rest: it takes it over, no frame needed
        Write(child, va + 24 * MiB, Filled(0x20, (int)(16 * MiB)));
        Assert.That(child.Stats.CopyOnWriteTakeoverPages, Is.EqualTo((long)(16 * MiB / Page)));
        AssertHostMirrors(child);
    }
}

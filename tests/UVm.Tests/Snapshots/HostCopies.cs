using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Frames;
using UVm.Host;
using UVm.Interop;
using UVm.Io;
using UVm.Spaces;
using UVm.Tests.Areas;
using Copies = UVm.Host.HostCopies;

namespace UVm.Tests.Snapshots;

/// <summary>
/// What the host-copy tests share: a precondition (the host supports them), a prepared space with
/// a snapshot, and the host's own view of a page: its contents read through <c>/proc/self/mem</c>
/// (no fault, so nothing changes), whether the host copied it (<c>PAGEMAP_SCAN</c>), and the
/// mapping <c>/proc/self/maps</c> shows for it.
/// </summary>
public abstract class HostCopyFixture : AreaFixture
{
    /// <summary>Pages of the prepared area.</summary>
    protected const int AreaPages = 16;

    /// <summary>Where the prepared area lives, and the lazy area next to it that nothing touched before the snapshot.</summary>
    protected const ulong AreaVa = 2 * MiB, LazyVa = 4 * MiB;

    [SetUp]
    public void RequireHostCopies() =>
        Assume.That(Copies.Supported, Is.True, "the host does not support host copies (Linux 6.13 or later); nothing to test");

    /// <summary>
    /// A lazy RW area of <see cref="AreaPages"/> pages at 2 MiB, page i holding <c>1000 + i</c> in
    /// its first 8 bytes (the rest zero), a lazy RW area of 16 pages at 4 MiB never touched, and a
    /// snapshot of that (tracked). Fault-around 1, so every fault maps exactly one page.
    /// </summary>
    protected (ulong Area, VmSnapshot Snapshot) Prepared(AddressSpace space)
    {
        space.FaultAroundPages = 1;
        ulong area = space.Map(AreaPages * Page, Lazy, At(AreaVa));
        for (ulong i = 0; i < AreaPages; i++) WriteU64(space, area + i * Page, 1000 + i);
        space.Map(16 * Page, Lazy, At(LazyVa));
        VmSnapshot snapshot = Track(space.Snapshot());
        return (area, snapshot);
    }

    protected static VaddrRange AreaRange => Span(AreaVa, AreaPages * Page);

    protected static IEnumerable<ulong> PagesOf(VaddrRange range)
    {
        for (ulong va = range.Start; va < range.End; va += Page) yield return va;
    }

    /// <summary>The page at <paramref name="va"/> as the host has it, read through <c>/proc/self/mem</c>: no fault, whatever its rights. It must be mapped.</summary>
    protected static byte[] HostPage(AddressSpace space, ulong va)
    {
        Assert.That(SlotAt(space, va).IsMapped, Is.True, $"0x{va:x} must be mapped to be read from the host (a reserved page would get the zero page)");
        byte[] page = Copies.NewPage();
        Copies.ReadPage(space.Space.HostBase, Paging.AlignDown(va, Page), Copies.AddressOf(page));
        return page;
    }

    /// <summary>The 8 bytes at <paramref name="va"/> as the host has them (see <see cref="HostPage"/>).</summary>
    protected static ulong HostU64(AddressSpace space, ulong va) => BitConverter.ToUInt64(HostPage(space, va), (int)(va % Page));

    /// <summary>The 8 bytes at <paramref name="va"/> in the frame the page table maps there (not the host copy).</summary>
    protected static ulong FrameU64(AddressSpace space, ulong va)
    {
        foreach ((VaddrRange _, VmQueriedItem? item) in space.QueryRange(Span(Paging.AlignDown(va, Page), Page)))
        {
            using (item)
            {
                if (item is not MappedRam ram) continue;
                VmReader<Infallible> r = ram.Frame.Reader();
                r.Skip(va % Page);
                return r.ReadVal<ulong>();
            }
        }
        throw new AssertionException($"no frame is mapped at 0x{va:x}");
    }

    /// <summary>The pages of <paramref name="range"/> the host copied (anonymous pages of the arena), from <c>PAGEMAP_SCAN</c>.</summary>
    protected static List<ulong> CopiedPages(AddressSpace space, VaddrRange range)
    {
        var runs = new List<(ulong Start, ulong End)>();
        space.Space.FindHostCopies(range.Start, range.End, runs);
        return runs.SelectMany(r => PagesOf(new VaddrRange(r.Start, r.End))).ToList();
    }

    /// <summary>The table's slot at <paramref name="va"/>.</summary>
    private protected static PageSlot SlotAt(AddressSpace space, ulong va)
    {
        using Cursor c = space.Space.Cursor(Span(Paging.AlignDown(va, Page), Page));
        return c.QuerySlot();
    }

    /// <summary>The host mapping of the page at <paramref name="va"/> (one line of <c>/proc/self/maps</c>).</summary>
    private protected static HostVma VmaAt(AddressSpace space, ulong va)
    {
        ulong host = (ulong)space.Space.HostBase + va;
        List<HostVma> vmas = ProcMaps.Read(host, host + Page);
        Assert.That(vmas, Has.Count.EqualTo(1), $"one host mapping covers 0x{va:x}");
        return vmas[0];
    }

    /// <summary>
    /// Asserts that <paramref name="va"/> is a host-copy entry (<paramref name="hostCopy"/>) or an
    /// ordinary one, and that the host maps it as such: the pool's memfd at the frame's offset,
    /// private (<c>p</c>) for a host copy and shared (<c>s</c>) otherwise, with the entry's rights.
    /// </summary>
    protected void AssertEntry(AddressSpace space, ulong va, bool hostCopy, string what)
    {
        PageSlot slot = SlotAt(space, va);
        Assert.That(slot.IsMapped && slot.IsTracked, Is.True, $"{what}: 0x{va:x} maps a frame");
        Assert.That(slot.IsHostCopy, Is.EqualTo(hostCopy), $"{what}: 0x{va:x} is {(hostCopy ? "" : "not ")}a host-copy entry");
        HostVma vma = VmaAt(space, va);
        ulong host = (ulong)space.Space.HostBase + va;
        string rights = $"{((slot.Rights & PageFlags.R) != 0 ? 'r' : '-')}{((slot.Rights & PageFlags.W) != 0 ? 'w' : '-')}{((slot.Rights & PageFlags.X) != 0 ? 'x' : '-')}";
        Assert.That(vma.Perms, Is.EqualTo(rights + (hostCopy ? "p" : "s")), $"{what}: the host mapping of 0x{va:x} ({vma.Perms})");
        Assert.That(HostFileId.FromMaps(vma.Dev, vma.Inode), Is.EqualTo(HostFileId.FromStat(Pool.FileIdentity)), $"{what}: 0x{va:x} maps the pool's memfd");
        Assert.That(vma.Offset + (host - vma.Start), Is.EqualTo(slot.Paddr), $"{what}: 0x{va:x} maps its frame's offset");
    }

    /// <summary>The write-watch/copy counters of an address space that must not move while the host copies.</summary>
    protected static (long Handled, long Spurious, long Unresolved, long Copies, long CopyPages, long Takeovers, long DemandZero) Counters(AddressSpace s) =>
        (s.Space.HandledFaults, s.Space.SpuriousFaults, s.Space.UnresolvedFaults, s.Stats.CopyOnWriteCopies, s.Stats.CopyOnWritePages, s.Stats.CopyOnWriteTakeovers, s.Stats.DemandZeroFaults);

    /// <summary>Asserts page i of the prepared area reads <paramref name="expected"/>(i) at offset 0, through the guest.</summary>
    protected static void AssertArea(AddressSpace space, ulong area, Func<ulong, ulong> expected, string what)
    {
        for (ulong i = 0; i < AreaPages; i++)
            Assert.That(ReadU64(space, area + i * Page), Is.EqualTo(expected(i)), $"{what}: page {i}");
    }
}

/// <summary>
/// Host copies: after a snapshot (or in an instance of one, or after a reset to one) a space's
/// writable private pages are mapped <c>MAP_PRIVATE</c> from the snapshot's frames, so the host
/// copies a page on its first write with no fault of UVm's. A reset finds the copies and drops
/// them; a fork, a snapshot and the write watch first turn them into frames; a protect, an unmap
/// and a spurious-fault refill keep what they must. Checked against contents, counters, frames
/// and the host's own view (<c>/proc/self/maps</c>, <c>/proc/self/pagemap</c>, <c>/proc/self/mem</c>).
/// </summary>
[NonParallelizable]
public sealed class SnapshotHostCopies : HostCopyFixture
{
    [Test]
    public void Host_copies_are_supported_on_a_kernel_that_has_what_they_need()
    {
        // Supported is probed; on Linux 6.13 or later (PAGEMAP_SCAN, process_madvise on oneself,
        // /proc/self/mem) it must say yes, or every test of this fixture would silently test nothing.
        Version kernel = Environment.OSVersion.Version;
        Assume.That(OperatingSystem.IsLinux() && kernel >= new Version(6, 13), $"kernel {kernel}");
        Assert.That(Copies.Supported, Is.True, $"kernel {kernel} has what host copies need, but the probe said no");
        Assert.That(Parent.Space.UsesHostCopies, Is.True, "a space made with the default options uses them");
        Assert.That(NewAddressSpaceWithoutHostCopies().Space.UsesHostCopies, Is.False, "HostCopies = false turns them off");
    }

    // ---- 1. writes after a snapshot -------------------------------------------------------

    [Test]
    public void A_write_after_a_snapshot_is_copied_by_the_host_with_no_fault_and_no_frame_and_the_snapshot_keeps_its_contents()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        foreach (ulong va in PagesOf(AreaRange)) AssertEntry(Parent, va, hostCopy: true, "after the snapshot");
        Assert.That(CopiedPages(Parent, AreaRange), Is.Empty, "precondition: nothing copied yet");
        var counters = Counters(Parent);
        long frames = Pool.FramesInUse;
        var frameOf = PagesOf(AreaRange).ToDictionary(va => va, va => SlotAt(Parent, va).Paddr);

        for (ulong i = 0; i < 8; i++) WriteU64(Parent, area + i * Page + 64, 5000 + i);
        Write(Parent, area + 8 * Page, Filled(0xAB)); // a whole page

        Assert.That(Counters(Parent), Is.EqualTo(counters), "no fault of UVm's: the host copied the pages");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "no frame was allocated");
        Assert.That(CopiedPages(Parent, Span(0, 8 * MiB)), Is.EqualTo(PagesOf(Span(area, 9 * Page))), "exactly the pages written are host copies");
        foreach (ulong va in PagesOf(AreaRange))
        {
            AssertEntry(Parent, va, hostCopy: true, "after the writes");
            Assert.That(SlotAt(Parent, va).Paddr, Is.EqualTo(frameOf[va]), "the entry still maps the snapshot's frame");
        }
        for (ulong i = 0; i < 8; i++)
        {
            Assert.That(ReadU64(Parent, area + i * Page + 64), Is.EqualTo(5000 + i), $"page {i}: the space reads its write");
            Assert.That(ReadU64(Parent, area + i * Page), Is.EqualTo(1000 + i), $"page {i}: and the rest of the page");
            Assert.That(FrameU64(Parent, area + i * Page + 64), Is.Zero, $"page {i}: the frame was not written");
        }
        Assert.That(Read(Parent, area + 8 * Page, (int)Page), Is.EqualTo(Filled(0xAB)));
        Assert.That(FrameU64(Parent, area + 8 * Page), Is.EqualTo(1008UL), "the whole-page write went to the copy");

        AddressSpace fresh = Track(snapshot.Instantiate());
        for (ulong i = 0; i < AreaPages; i++)
        {
            Assert.That(ReadU64(fresh, area + i * Page), Is.EqualTo(1000 + i), $"a fresh instance: page {i}");
            Assert.That(ReadU64(fresh, area + i * Page + 64), Is.Zero, $"a fresh instance: page {i} at 64");
        }
        AssertHostMirrors(Parent, fresh);
    }

    [Test]
    public void An_instance_writes_without_faults_and_instances_and_their_source_stay_independent()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        AddressSpace a = Track(snapshot.Instantiate()), b = Track(snapshot.Instantiate());
        Assert.That(a.Space.UsesHostCopies && a.Space.MayHoldHostCopies, Is.True, "an instance uses host copies");
        foreach (ulong va in PagesOf(AreaRange)) AssertEntry(a, va, hostCopy: true, "in an instance");
        var counters = Counters(a);
        long frames = Pool.FramesInUse;

        WriteU64(a, area + 2 * Page, 1);
        WriteU64(b, area + 2 * Page, 2);
        WriteU64(Parent, area + 2 * Page, 3);
        WriteU64(a, area + 5 * Page, 4);

        Assert.That(Counters(a), Is.EqualTo(counters), "no fault in the instance");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "no frame for any of the copies");
        Assert.That((ReadU64(a, area + 2 * Page), ReadU64(b, area + 2 * Page), ReadU64(Parent, area + 2 * Page)), Is.EqualTo((1UL, 2UL, 3UL)));
        Assert.That((ReadU64(b, area + 5 * Page), ReadU64(Parent, area + 5 * Page)), Is.EqualTo((1005UL, 1005UL)));
        Assert.That(CopiedPages(a, AreaRange), Is.EqualTo(new[] { area + 2 * Page, area + 5 * Page }));
        Assert.That(CopiedPages(b, AreaRange), Is.EqualTo(new[] { area + 2 * Page }));
        Assert.That(a.Reset(snapshot), Is.EqualTo(2), "the instance's reset counts its two copies");
        AssertArea(a, area, i => 1000 + i, "the instance after its reset");
        Assert.That(ReadU64(b, area + 2 * Page), Is.EqualTo(2UL), "the other instance keeps its write");
        AssertHostMirrors(Parent, a, b);
    }

    [Test]
    public void An_instance_outlives_its_snapshot_its_copies_still_work_and_a_fork_and_a_reset_elsewhere_handle_them()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        AddressSpace instance = Track(snapshot.Instantiate());
        snapshot.Dispose();
        Parent.Reset(Track(Parent.Snapshot())); // the source lets go of nothing the instance needs
        long frames = Pool.FramesInUse;
        WriteU64(instance, area + 3 * Page, 33);
        WriteU64(instance, area + 4 * Page, 44);
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "still copied by the host");
        Assert.That(CopiedPages(instance, AreaRange), Is.EqualTo(new[] { area + 3 * Page, area + 4 * Page }));

        AddressSpace child = ForkOf(instance);
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames + 2));
        AssertArea(child, area, i => i == 3 ? 33 : i == 4 ? 44 : 1000 + i, "the child");
        VmSnapshot other = Track(Parent.Snapshot());
        WriteU64(instance, area + 5 * Page, 55);
        instance.Reset(other); // no log measured from it: every page either maps
        AssertArea(instance, area, i => 1000 + i, "the instance reset to another snapshot");
        Assert.That(CopiedPages(instance, AreaRange), Is.Empty);
        AssertHostMirrors(Parent, instance, child);
    }

    // ---- 2. reset ---------------------------------------------------------------------------

    [Test]
    public void Reset_drops_the_host_copies_counts_them_with_the_logged_changes_and_leaks_nothing()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        long frames = Pool.FramesInUse;
        ulong[] written = { 1, 4, 9, 15 };
        foreach (ulong i in written) WriteU64(Parent, area + i * Page + 8, 7000 + i);
        WriteU64(Parent, LazyVa + 3 * Page, 77); // a demand-zero fill: a logged change of the table
        Assert.That(CopiedPages(Parent, Span(0, 8 * MiB)), Is.EqualTo(written.Select(i => area + i * Page)), "precondition: four host copies");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames + 1), "precondition: the fill took one frame, the copies none");

        int compared = Parent.Reset(snapshot);

        Assert.That(compared, Is.EqualTo(written.Length + 1), "the four host copies and the one logged page");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "the fill's frame went back, nothing else was taken");
        Assert.That(CopiedPages(Parent, Span(0, 8 * MiB)), Is.Empty, "the copies were dropped");
        foreach (ulong va in PagesOf(AreaRange)) AssertEntry(Parent, va, hostCopy: true, "after the reset");
        Assert.That(SlotAt(Parent, LazyVa + 3 * Page).IsMapped, Is.False, "the fill is gone");
        for (ulong i = 0; i < AreaPages; i++)
            Assert.That((HostU64(Parent, area + i * Page), HostU64(Parent, area + i * Page + 8)), Is.EqualTo((1000 + i, 0UL)), $"page {i} (host view)");
        AssertHostMirrors(Parent);
        Assert.That(Parent.Reset(snapshot), Is.Zero, "a second reset has nothing to compare");

        var counters = Counters(Parent);
        WriteU64(Parent, area + 3 * Page, 1);
        WriteU64(Parent, area + 3 * Page + 16, 2);
        WriteU64(Parent, area + 12 * Page, 3);
        Assert.That(Counters(Parent), Is.EqualTo(counters), "after a reset the host copies again, with no fault");
        Assert.That(Parent.Reset(snapshot), Is.EqualTo(2), "two pages written, each counted once");
        AssertArea(Parent, area, i => 1000 + i, "after the third reset");
        Assert.That(ReadU64(Parent, LazyVa + 3 * Page), Is.Zero, "the lazy area reads zeros again");
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Reset_of_a_written_host_copy_whose_entry_also_changed_counts_it_once_and_restores_it()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        WriteU64(Parent, area + 6 * Page, 66);
        Parent.Protect(Span(area + 6 * Page, Page), PageFlags.R); // the entry changes: logged
        Assert.That(CopiedPages(Parent, AreaRange), Is.EqualTo(new[] { area + 6 * Page }), "precondition: the copy survives the protect");

        Assert.That(Parent.Reset(snapshot), Is.EqualTo(1), "one page, logged and copied, counted once");

        Assert.That(Parent.Areas, Is.EqualTo(snapshot.Areas));
        AssertEntry(Parent, area + 6 * Page, hostCopy: true, "after the reset");
        AssertArea(Parent, area, i => 1000 + i, "after the reset");
        WriteU64(Parent, area + 6 * Page, 67);
        Assert.That(CopiedPages(Parent, AreaRange), Is.EqualTo(new[] { area + 6 * Page }), "writable again, copied by the host");
    }

    [Test]
    public void Reset_to_another_snapshot_drops_the_copies_too()
    {
        (ulong area, VmSnapshot first) = Prepared(Parent);
        WriteU64(Parent, area, 1);
        VmSnapshot second = Track(Parent.Snapshot()); // page 0 reads 1 in it
        WriteU64(Parent, area + Page, 2);
        WriteU64(Parent, area, 3);

        Parent.Reset(first); // the log is measured from the second: every page either maps is compared

        AssertArea(Parent, area, i => 1000 + i, "reset to the first snapshot");
        Assert.That(CopiedPages(Parent, AreaRange), Is.Empty);
        Parent.Reset(second);
        AssertArea(Parent, area, i => i == 0 ? 1 : 1000 + i, "reset to the second snapshot");
        AssertHostMirrors(Parent);
    }

    // ---- 3. fork ----------------------------------------------------------------------------

    [Test]
    public void Fork_of_a_space_with_written_host_copies_gives_each_written_page_a_frame_and_both_spaces_the_contents()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        ulong[] written = { 0, 3, 7, 8 };
        foreach (ulong i in written) WriteU64(Parent, area + i * Page, 9000 + i);
        long frames = Pool.FramesInUse;
        var snapshotFrame = PagesOf(AreaRange).ToDictionary(va => va, va => SlotAt(Parent, va).Paddr);

        AddressSpace child = ForkOf(Parent);

        Assert.That(Pool.FramesInUse, Is.EqualTo(frames + written.Length), "one new frame per written page, none for the rest");
        Assert.That(Parent.Space.MayHoldHostCopies, Is.False, "the parent's copies were dissolved");
        Assert.That(CopiedPages(Parent, Span(0, 8 * MiB)), Is.Empty, "no anonymous page is left in the parent");
        Func<ulong, ulong> expected = i => written.Contains(i) ? 9000 + i : 1000 + i;
        foreach (AddressSpace s in new[] { Parent, child })
        {
            string who = s == Parent ? "parent" : "child";
            foreach (ulong va in PagesOf(AreaRange))
            {
                AssertEntry(s, va, hostCopy: false, who);
                ulong i = (va - area) / Page;
                Assert.That(FrameU64(s, va), Is.EqualTo(expected(i)), $"{who}: page {i}'s frame holds its contents");
                Assert.That(SlotAt(s, va).Paddr == snapshotFrame[va], Is.EqualTo(!written.Contains(i)), $"{who}: page {i} maps {(written.Contains(i) ? "a new frame" : "the snapshot's frame")}");
                Assert.That(SlotAt(s, va).Allows(PageFlags.W), Is.False, $"{who}: page {i} is copy-on-write");
            }
            AssertArea(s, area, expected, who);
        }
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames + written.Length), "reading copied nothing");

        WriteU64(child, area + 3 * Page, 1);
        WriteU64(Parent, area + 3 * Page, 2);
        WriteU64(Parent, area + 4 * Page, 3);
        WriteU64(child, area + 5 * Page, 4);
        Assert.That((ReadU64(Parent, area + 3 * Page), ReadU64(child, area + 3 * Page)), Is.EqualTo((2UL, 1UL)));
        Assert.That((ReadU64(Parent, area + 4 * Page), ReadU64(child, area + 4 * Page)), Is.EqualTo((3UL, 1004UL)));
        Assert.That((ReadU64(Parent, area + 5 * Page), ReadU64(child, area + 5 * Page)), Is.EqualTo((1005UL, 4UL)));
        Assert.That(ReadU64(child, area + 7 * Page), Is.EqualTo(9007UL));
        AssertHostMirrors(Parent, child);

        Parent.Reset(snapshot);
        AssertArea(Parent, area, i => 1000 + i, "the parent reset to the snapshot");
        Assert.That(ReadU64(child, area), Is.EqualTo(9000UL), "the child keeps what it forked");
        AssertHostMirrors(Parent, child);
    }

    // ---- 4. snapshot of a space holding written host copies ------------------------------

    [Test]
    public void Snapshot_of_an_instance_with_written_copies_holds_them_and_resets_go_to_either_snapshot()
    {
        (ulong area, VmSnapshot first) = Prepared(Parent);
        AddressSpace instance = Track(first.Instantiate());
        WriteU64(instance, area + Page, 11);
        WriteU64(instance, area + 10 * Page, 110);
        long frames = Pool.FramesInUse;

        VmSnapshot second = Track(instance.Snapshot());

        Assert.That(Pool.FramesInUse, Is.EqualTo(frames + 2), "the two written pages got frames of their own");
        // The written pages got writable frames of their own, which the new snapshot makes host
        // copies again; the unwritten ones stay host copies, their frames shared with the second
        // snapshot too: every page's next write is the host's copy.
        foreach (ulong va in PagesOf(AreaRange))
            AssertEntry(instance, va, hostCopy: true, "after the second snapshot");
        Assert.That(CopiedPages(instance, AreaRange), Is.Empty, "the copies became frames");
        Func<ulong, ulong> inSecond = i => i == 1 ? 11 : i == 10 ? 110 : 1000 + i;
        AssertArea(Track(second.Instantiate()), area, inSecond, "an instance of the second snapshot");

        WriteU64(instance, area + Page, 12);
        WriteU64(instance, area + 2 * Page, 22);
        Assert.That(instance.Reset(second), Is.EqualTo(2));
        AssertArea(instance, area, inSecond, "reset to the second snapshot");
        WriteU64(instance, area + 3 * Page, 33);
        instance.Reset(first);
        AssertArea(instance, area, i => 1000 + i, "reset to the first snapshot");
        instance.Reset(second);
        AssertArea(instance, area, inSecond, "reset to the second snapshot again");
        AssertArea(Parent, area, i => 1000 + i, "the source space");
        AssertHostMirrors(Parent, instance);
    }

    [Test]
    public void Snapshot_of_the_source_space_with_written_copies_keeps_the_older_snapshot_intact()
    {
        (ulong area, VmSnapshot first) = Prepared(Parent);
        WriteU64(Parent, area + 4 * Page, 44);
        VmSnapshot second = Track(Parent.Snapshot());
        WriteU64(Parent, area + 4 * Page, 45);
        WriteU64(Parent, area + 5 * Page, 55);

        Parent.Reset(first);
        AssertArea(Parent, area, i => 1000 + i, "reset to the first");
        Parent.Reset(second);
        AssertArea(Parent, area, i => i == 4 ? 44 : 1000 + i, "reset to the second");
        AssertArea(Track(first.Instantiate()), area, i => 1000 + i, "an instance of the first");
        AssertHostMirrors(Parent);
    }

    // ---- 5. the write watch -----------------------------------------------------------------

    [Test]
    public void ResetWriteWatch_keeps_the_written_contents_sees_every_later_first_write_and_turns_host_copies_off()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        WriteU64(Parent, area + 2 * Page, 22);
        WriteU64(Parent, area + 4 * Page, 44);
        long frames = Pool.FramesInUse;

        Parent.ResetWriteWatch(AreaRange);

        Assert.That(Parent.Space.UsesHostCopies, Is.False, "the watch turns host copies off for good");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames + 2), "the two copies became frames");
        Assert.That(CopiedPages(Parent, Span(0, 8 * MiB)), Is.Empty);
        foreach (ulong va in PagesOf(AreaRange))
        {
            AssertEntry(Parent, va, hostCopy: false, "after the watch started");
            Assert.That(SlotAt(Parent, va).Allows(PageFlags.W), Is.False, "watched: the first write must fault");
        }
        AssertArea(Parent, area, i => i == 2 ? 22 : i == 4 ? 44 : 1000 + i, "after the watch started");
        Assert.That(Parent.WrittenPages(AreaRange), Is.Empty, "nothing written since the watch started");

        long handled = Parent.Space.HandledFaults;
        WriteU64(Parent, area + 4 * Page, 45);
        WriteU64(Parent, area + 7 * Page, 77);
        WriteU64(Parent, area + 7 * Page + 8, 78);
        Assert.That(Parent.Space.HandledFaults - handled, Is.EqualTo(2), "each first write faulted once");
        Assert.That(Parent.WrittenPages(AreaRange), Is.EqualTo(new[] { area + 4 * Page, area + 7 * Page }));
        Assert.That(CopiedPages(Parent, AreaRange), Is.Empty, "the faults made UVm's copies, not the host's");

        VmSnapshot later = Track(Parent.Snapshot());
        foreach (ulong va in PagesOf(AreaRange)) AssertEntry(Parent, va, hostCopy: false, "a snapshot after the watch");
        var counters = Counters(Parent);
        WriteU64(Parent, area + 9 * Page, 99);
        Assert.That(Counters(Parent), Is.Not.EqualTo(counters), "the write faulted");
        Assert.That(CopiedPages(Parent, AreaRange), Is.Empty);
        Assert.That(Parent.Reset(later), Is.EqualTo(1));
        Assert.That(Parent.WrittenPages(AreaRange), Does.Contain(area + 9 * Page), "the watch saw it");
        Parent.Reset(snapshot); // a snapshot with host-copy entries, adapted
        foreach (ulong va in PagesOf(AreaRange)) AssertEntry(Parent, va, hostCopy: false, "reset to the host-copy snapshot after the watch");
        AssertArea(Parent, area, i => 1000 + i, "reset to the first snapshot");

        AddressSpace instance = Track(later.Instantiate());
        // The watch is its source's, not the instance's: the instance would make host copies, but
        // this snapshot, taken while the watch ran, has none to give it.
        Assert.That(instance.Space.UsesHostCopies, Is.True, "an instance of a snapshot of a watched space is not watched");
        foreach (ulong va in PagesOf(AreaRange)) AssertEntry(instance, va, hostCopy: false, "in the instance of a snapshot without host copies");
        AssertHostMirrors(Parent, instance);
    }

    // ---- 6. protect -------------------------------------------------------------------------

    [Test]
    public void Protect_to_read_only_and_back_keeps_a_written_copy_and_a_second_write_loses_nothing()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        ulong page = area + 5 * Page;
        WriteU64(Parent, page + 8, 1);
        long frames = Pool.FramesInUse;

        Parent.Protect(Span(page, Page), PageFlags.R);
        AssertEntry(Parent, page, hostCopy: true, "read-only");
        Assert.That(CopiedPages(Parent, AreaRange), Is.EqualTo(new[] { page }), "the copy is kept");
        Assert.That(ReadU64(Parent, page + 8), Is.EqualTo(1UL));
        AssertFault(TryWrite(Parent, page + 16, BitConverter.GetBytes(2UL)), page + 16, PageFaultKind.Protection);

        Parent.Protect(Span(page, Page), PageFlags.RW);
        Assert.That((ReadU64(Parent, page), ReadU64(Parent, page + 8)), Is.EqualTo((1005UL, 1UL)), "read-write again: the copy still");
        WriteU64(Parent, page + 16, 2);
        Assert.That((ReadU64(Parent, page), ReadU64(Parent, page + 8), ReadU64(Parent, page + 16)), Is.EqualTo((1005UL, 1UL, 2UL)), "both writes");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "W came back without a copy of UVm's");
        AssertEntry(Parent, page, hostCopy: true, "written again");
        AssertHostMirrors(Parent);

        Parent.Protect(Span(page, Page), PageFlags.None);
        AssertFault(TryRead(Parent, page, new byte[8]), page, PageFaultKind.Protection);
        Assert.That(CopiedPages(Parent, AreaRange), Is.EqualTo(new[] { page }), "no access: the copy is kept");
        Assert.That(HostU64(Parent, page + 16), Is.EqualTo(2UL));
        AssertHostMirrors(Parent);
        Parent.Protect(Span(page, Page), PageFlags.RW);
        Assert.That((ReadU64(Parent, page), ReadU64(Parent, page + 8), ReadU64(Parent, page + 16)), Is.EqualTo((1005UL, 1UL, 2UL)), "after no access and back");
        WriteU64(Parent, page + 24, 3);
        Assert.That(ReadU64(Parent, page + 8), Is.EqualTo(1UL));
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames));
        AssertHostMirrors(Parent);

        Parent.Reset(snapshot);
        AssertArea(Parent, area, i => 1000 + i, "after the reset");
        Assert.That(ReadU64(Parent, page + 8), Is.Zero);
    }

    [Test]
    public void Protect_of_an_unwritten_host_copy_to_read_only_and_back_still_lets_the_host_copy_it()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        long frames = Pool.FramesInUse;
        Parent.Protect(AreaRange, PageFlags.R);
        Parent.Protect(AreaRange, PageFlags.RW);
        WriteU64(Parent, area + 2 * Page, 5);
        Assert.That(ReadU64(Parent, area + 2 * Page), Is.EqualTo(5UL));
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "no frame: W given back to the host copy");
        Assert.That(CopiedPages(Parent, AreaRange), Does.Contain(area + 2 * Page));
        Assert.That(FrameU64(Parent, area + 2 * Page), Is.EqualTo(1002UL), "the snapshot's frame was not written");
        AssertArea(Track(snapshot.Instantiate()), area, i => 1000 + i, "the snapshot");
        AssertHostMirrors(Parent);
    }

    // ---- 7. unmap and map again --------------------------------------------------------------

    [Test]
    public void Unmap_of_written_copies_then_a_new_area_at_the_same_address_reads_zeros_and_leaks_nothing()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        for (ulong i = 0; i < AreaPages; i += 2) Write(Parent, area + i * Page, Filled((byte)(i + 1)));
        long frames = Pool.FramesInUse;

        Parent.Unmap(AreaRange);
        Assert.That(CopiedPages(Parent, Span(0, 8 * MiB)), Is.Empty, "the copies went with the mappings");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "the snapshot still holds the frames");
        Parent.Map(AreaPages * Page, Lazy, At(area));
        for (ulong i = 0; i < AreaPages; i++) Assert.That(Read(Parent, area + i * Page, (int)Page), Is.EqualTo(new byte[Page]), $"page {i} of the new area");
        AssertHostMirrors(Parent);

        Parent.Reset(snapshot);
        AssertArea(Parent, area, i => 1000 + i, "reset after the unmap and map");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames), "the new area's frames went back");
        Assert.That(CopiedPages(Parent, Span(0, 8 * MiB)), Is.Empty);
        AssertHostMirrors(Parent);
    }

    [Test]
    public void Unmap_of_part_of_an_area_drops_only_the_copies_there()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        for (ulong i = 0; i < AreaPages; i++) WriteU64(Parent, area + i * Page + 8, 100 + i);
        Parent.Unmap(Span(area + 4 * Page, 4 * Page));
        Assert.That(CopiedPages(Parent, AreaRange), Is.EqualTo(PagesOf(AreaRange).Where(va => va < area + 4 * Page || va >= area + 8 * Page)));
        for (ulong i = 0; i < AreaPages; i++)
        {
            if (i is >= 4 and < 8) continue;
            Assert.That(ReadU64(Parent, area + i * Page + 8), Is.EqualTo(100 + i), $"page {i}");
        }
        Assert.That(Parent.Reset(snapshot), Is.EqualTo(AreaPages), "four unmapped pages logged, twelve copies beyond them");
        AssertArea(Parent, area, i => 1000 + i, "after the reset");
        AssertHostMirrors(Parent);
    }

    // ---- 9. spurious faults -----------------------------------------------------------------

    [Test]
    public void A_written_copy_made_inaccessible_behind_UVms_back_is_refilled_with_its_contents()
    {
        (ulong area, VmSnapshot _) = Prepared(Parent);
        ulong page = area + 3 * Page, clean = area + 4 * Page;
        WriteU64(Parent, page + 8, 31);
        nint host = Parent.Space.HostBase + (nint)page;
        Assert.That(Libc.Mprotect(host, (nuint)(2 * Page), Libc.PROT_NONE), Is.Zero, "raw mprotect of the two pages");
        Assert.That(GuestMemory.MirrorDiffs(Parent.Space).TotalCount, Is.GreaterThan(0), "precondition: the host no longer mirrors the table");
        long spurious = Parent.Space.SpuriousFaults, handled = Parent.Space.HandledFaults;

        Assert.That(ReadU64(Parent, page + 8), Is.EqualTo(31UL), "the refilled copy keeps the write");
        Assert.That(ReadU64(Parent, page), Is.EqualTo(1003UL));
        Assert.That(ReadU64(Parent, clean), Is.EqualTo(1004UL), "the unwritten page reads its frame");

        Assert.That(Parent.Space.SpuriousFaults - spurious, Is.EqualTo(2), "one refill per page");
        Assert.That(Parent.Space.HandledFaults, Is.EqualTo(handled), "the handler was not needed");
        Assert.That(CopiedPages(Parent, AreaRange), Is.EqualTo(new[] { page }), "the copy is still the host's");
        AssertEntry(Parent, page, hostCopy: true, "refilled");
        AssertEntry(Parent, clean, hostCopy: true, "refilled");
        WriteU64(Parent, page + 16, 32);
        WriteU64(Parent, clean + 8, 41);
        Assert.That((ReadU64(Parent, page + 8), ReadU64(Parent, page + 16), ReadU64(Parent, clean + 8)), Is.EqualTo((31UL, 32UL, 41UL)));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void A_written_copy_made_read_only_behind_UVms_back_gets_write_access_back_and_keeps_its_contents()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        ulong page = area + 9 * Page;
        WriteU64(Parent, page + 8, 91);
        Assert.That(Libc.Mprotect(Parent.Space.HostBase + (nint)page, (nuint)Page, Libc.PROT_READ), Is.Zero);
        long spurious = Parent.Space.SpuriousFaults, frames = Pool.FramesInUse;

        WriteU64(Parent, page + 16, 92);

        Assert.That(Parent.Space.SpuriousFaults - spurious, Is.EqualTo(1), "a refill of the rights");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames));
        Assert.That((ReadU64(Parent, page + 8), ReadU64(Parent, page + 16)), Is.EqualTo((91UL, 92UL)));
        AssertHostMirrors(Parent);
        Assert.That(Parent.Reset(snapshot), Is.EqualTo(1));
        Assert.That(ReadU64(Parent, page + 8), Is.Zero);
    }

    // ---- 11. options and adaptation ------------------------------------------------------------

    [Test]
    public void A_space_without_host_copies_makes_none_and_neither_do_instances_of_its_snapshots()
    {
        AddressSpace plain = NewAddressSpaceWithoutHostCopies();
        (ulong area, VmSnapshot snapshot) = Prepared(plain);
        foreach (ulong va in PagesOf(AreaRange))
        {
            AssertEntry(plain, va, hostCopy: false, "a snapshot without host copies");
            Assert.That(SlotAt(plain, va).Allows(PageFlags.W), Is.False, "copy-on-write");
        }
        long copies = plain.Stats.CopyOnWriteCopies;
        WriteU64(plain, area, 1);
        Assert.That(plain.Stats.CopyOnWriteCopies - copies, Is.EqualTo(1), "UVm copied the page");
        Assert.That(CopiedPages(plain, Span(0, 8 * MiB)), Is.Empty);

        AddressSpace instance = Track(snapshot.Instantiate());
        Assert.That(instance.Space.UsesHostCopies, Is.False, "the instance has its source's options");
        foreach (ulong va in PagesOf(AreaRange)) AssertEntry(instance, va, hostCopy: false, "an instance");
        copies = instance.Stats.CopyOnWriteCopies;
        WriteU64(instance, area + Page, 2);
        Assert.That(instance.Stats.CopyOnWriteCopies - copies, Is.EqualTo(1));
        Assert.That(CopiedPages(instance, Span(0, 8 * MiB)), Is.Empty);
        Assert.That(instance.Reset(snapshot), Is.EqualTo(1));
        Assert.That(plain.Reset(snapshot), Is.EqualTo(1));
        AssertArea(plain, area, i => 1000 + i, "reset");
        AssertHostMirrors(plain, instance);
    }

    [Test]
    public void A_space_without_host_copies_reset_to_a_snapshot_with_them_maps_ordinary_copy_on_write_entries()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent); // host-copy entries
        AddressSpace plain = NewAddressSpaceWithoutHostCopies();
        plain.FaultAroundPages = 1;

        Assert.That(plain.Reset(snapshot), Is.GreaterThanOrEqualTo(AreaPages), "every page the snapshot maps is compared");

        foreach (ulong va in PagesOf(AreaRange))
        {
            AssertEntry(plain, va, hostCopy: false, "adapted");
            Assert.That(SlotAt(plain, va).Allows(PageFlags.W), Is.False, "adapted: copy-on-write");
        }
        AssertArea(plain, area, i => 1000 + i, "adapted");
        long copies = plain.Stats.CopyOnWriteCopies;
        WriteU64(plain, area + 2 * Page, 3);
        Assert.That(plain.Stats.CopyOnWriteCopies - copies, Is.EqualTo(1), "the write faulted and UVm copied");
        Assert.That(CopiedPages(plain, Span(0, 8 * MiB)), Is.Empty);
        Assert.That(ReadU64(Parent, area + 2 * Page), Is.EqualTo(1002UL));
        Assert.That(plain.Reset(snapshot), Is.EqualTo(1));
        AssertHostMirrors(Parent, plain);
    }

    [Test]
    public void A_watched_space_reset_to_its_host_copy_snapshot_sees_every_first_write()
    {
        (ulong area, VmSnapshot snapshot) = Prepared(Parent);
        WriteU64(Parent, area + Page, 1); // a host copy, dissolved by the watch
        Parent.ResetWriteWatch(AreaRange);
        WriteU64(Parent, area + 2 * Page, 2);

        Parent.Reset(snapshot);
        foreach (ulong va in PagesOf(AreaRange)) AssertEntry(Parent, va, hostCopy: false, "adapted");
        AssertArea(Parent, area, i => 1000 + i, "after the reset");
        Parent.ResetWriteWatch(AreaRange);
        WriteU64(Parent, area + 5 * Page, 5);
        WriteU64(Parent, area + 11 * Page, 11);
        Assert.That(Parent.WrittenPages(AreaRange), Is.EqualTo(new[] { area + 5 * Page, area + 11 * Page }));
        Assert.That(CopiedPages(Parent, Span(0, 8 * MiB)), Is.Empty);
        AssertHostMirrors(Parent);
    }

    // ---- many copies ------------------------------------------------------------------------------

    /// <summary>
    /// More separate runs of copies than one <c>PAGEMAP_SCAN</c> call returns (256 regions) and
    /// than one <c>process_madvise</c> call takes (1024 ranges): every one is found, counted and dropped.
    /// </summary>
    [Test]
    public void Reset_finds_counts_and_drops_more_separate_copies_than_one_scan_or_one_drop_call_takes()
    {
        const int Runs = 1100;
        ulong area = Parent.Map(2 * Runs * Page, Populated, At(2 * MiB));
        VmSnapshot snapshot = Track(Parent.Snapshot());
        long frames = Pool.FramesInUse;
        var counters = Counters(Parent);
        for (ulong i = 0; i < Runs; i++) WriteU64(Parent, area + 2 * i * Page, i + 1); // every other page: 1100 runs of one page

        Assert.That(Counters(Parent), Is.EqualTo(counters), "no fault");
        List<ulong> copied = CopiedPages(Parent, Span(area, 2 * Runs * Page));
        Assert.That(copied, Has.Count.EqualTo(Runs), "every copy is found");
        Assert.That(copied, Is.EqualTo(Enumerable.Range(0, Runs).Select(i => area + 2 * (ulong)i * Page)));

        Assert.That(Parent.Reset(snapshot), Is.EqualTo(Runs), "every copy counted once");

        Assert.That(CopiedPages(Parent, Span(area, 2 * Runs * Page)), Is.Empty, "every copy dropped");
        Assert.That(Pool.FramesInUse, Is.EqualTo(frames));
        for (ulong i = 0; i < Runs; i++) Assert.That(HostU64(Parent, area + 2 * i * Page), Is.Zero, $"page {2 * i}");
        AssertHostMirrors(Parent);
        Parent.Unmap(Span(area, 2 * Runs * Page));
    }

    // ---- backends --------------------------------------------------------------------------------

    /// <summary>
    /// Linear frames are shared memory: "writes are shared, also across a fork", and a snapshot
    /// captures them as a mapping (a reset "does not bring back bytes written to them since").
    /// A snapshot must not make them host copies: a private copy would hide the write from the
    /// segment's owner.
    /// </summary>
    [Test]
    public void Writes_to_a_linear_frames_area_after_a_snapshot_still_reach_the_shared_frames() => LinearFramesStayShared(Parent);

    /// <summary>The same in a space without host copies: the behaviour the test above expects (passes).</summary>
    [Test]
    public void Writes_to_a_linear_frames_area_after_a_snapshot_reach_the_shared_frames_in_a_space_without_host_copies() =>
        LinearFramesStayShared(NewAddressSpaceWithoutHostCopies());

    private void LinearFramesStayShared(AddressSpace space)
    {
        AddressSpace Parent = space;
        using USegment segment = Pool.AllocSegment(4);
        ulong linear = Parent.Map(4 * Page, new AreaBackend.LinearFrames(segment, 0), At(8 * MiB));
        WriteU64(Parent, linear + Page, 1);
        VmSnapshot snapshot = Parent.Snapshot();
        try
        {
            WriteU64(Parent, linear + Page, 2);
            VmReader<Infallible> r = segment.Reader();
            r.Skip(Page);
            Assert.That(r.ReadVal<ulong>(), Is.EqualTo(2UL), "the segment sees the write made after the snapshot");
            Assert.That(CopiedPages(Parent, Span(linear, 4 * Page)), Is.Empty, "no private copy of shared memory");
            Parent.Reset(snapshot);
            Assert.That(ReadU64(Parent, linear + Page), Is.EqualTo(2UL), "a reset does not bring back bytes of shared memory");
        }
        finally
        {
            snapshot.Dispose();
            Parent.Clear();
        }
    }

    [Test]
    public void An_image_area_written_before_and_after_a_snapshot_is_reset_to_its_snapshot_contents()
    {
        using VmImage image = VmImage.FromBytes(Enumerable.Range(0, 4 * (int)Page).Select(i => (byte)(i / (int)Page + 1)).ToArray(), Pool);
        Parent.FaultAroundPages = 1; // the first write copies its page only
        ulong code = Parent.Map(4 * Page, new AreaBackend.Image(image, 0), At(8 * MiB, PageFlags.RW));
        Write(Parent, code + Page, new byte[] { 9 }); // a private copy, writable: a host copy after the snapshot
        VmSnapshot snapshot = Track(Parent.Snapshot());
        AssertEntry(Parent, code + Page, hostCopy: true, "a written image page");
        Write(Parent, code + Page, new byte[] { 10 });
        Write(Parent, code + 2 * Page, new byte[] { 11 }); // still the image's frame: UVm copies it
        Assert.That(CopiedPages(Parent, Span(code, 4 * Page)), Is.EqualTo(new[] { code + Page }));

        Parent.Reset(snapshot);

        Assert.That(Read(Parent, code, 1), Is.EqualTo(new byte[] { 1 }));
        Assert.That(Read(Parent, code + Page, 2), Is.EqualTo(new byte[] { 9, 2 }));
        Assert.That(Read(Parent, code + 2 * Page, 1), Is.EqualTo(new byte[] { 3 }));
        AssertHostMirrors(Parent);
        Parent.Clear();
    }

    // ---- 12. random operations against a byte model -------------------------------------------

    /// <summary>What the model holds for the area: two words per page (offsets 0 and 2048) and each page's rights.</summary>
    private sealed record ByteModel(ulong[] Word0, ulong[] Word1, PageFlags[] Flags)
    {
        public static ByteModel New(int pages) => new(new ulong[pages], new ulong[pages], Enumerable.Repeat(PageFlags.RW, pages).ToArray());

        public ByteModel Copy() => new((ulong[])Word0.Clone(), (ulong[])Word1.Clone(), (PageFlags[])Flags.Clone());
    }

    [Test, CancelAfter(60_000)]
    public void Random_writes_resets_snapshots_forks_protects_unmaps_and_watches_agree_with_a_byte_model([Values(25)] int cases, [Values(30)] int steps)
    {
        int seed = Seeds.For(nameof(Random_writes_resets_snapshots_forks_protects_unmaps_and_watches_agree_with_a_byte_model));
        var random = new Random(seed);
        var budget = new LoopBudget("random host-copy cases", TimeSpan.FromSeconds(30));
        for (int c = 0; c < cases; c++)
        {
            budget.Check($"{c} of {cases} cases");
            RunModelCase(random.Next(), steps, $"seed {seed}, case {c}");
        }
    }

    private void RunModelCase(int caseSeed, int steps, string where)
    {
        const int N = 16;
        var random = new Random(caseSeed);
        using var space = new AddressSpace(new VmSpaceOptions { Size = 64 * MiB, Pool = Pool }) { FaultAroundPages = random.Next(2) == 0 ? 1 : 4 };
        var snapshots = new List<(VmSnapshot Snapshot, ByteModel Model)>();
        var done = new List<string>();
        try
        {
            space.Space.Activate();
            ulong area = space.Map(N * Page, Lazy, At(AreaVa));
            var model = ByteModel.New(N);
            for (int p = 0; p < N; p++) WriteWord(space, area, model, p, 0, (ulong)(1000 + p));
            snapshots.Add((space.Snapshot(), model.Copy()));
            done.Add("map 16 pages, write each, snapshot 0");
            bool watching = false, hostCopies = true;
            var written = new SortedSet<ulong>();
            var dirty = new HashSet<ulong>(); // pages written since the last step that dissolves or drops the copies
            for (int step = 0; step < steps; step++)
            {
                int kind = random.Next(20);
                string what;
                if (kind < 9)
                {
                    int p = random.Next(N), word = random.Next(2);
                    ulong value = (ulong)random.Next(1, 1_000_000);
                    what = $"write page {p} word {word} = {value}";
                    bool writable = (model.Flags[p] & PageFlags.W) != 0;
                    CopyResult r = TryWrite(space, area + (ulong)p * Page + (ulong)word * 2048, BitConverter.GetBytes(value));
                    Assert.That(r.IsOk, Is.EqualTo(writable), $"{what}: {r.Error} {r.Fault} ({where}: {string.Join("; ", done)})");
                    if (writable)
                    {
                        (word == 0 ? model.Word0 : model.Word1)[p] = value;
                        if (watching) written.Add(area + (ulong)p * Page);
                        dirty.Add(area + (ulong)p * Page);
                    }
                    else
                    {
                        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault), $"{what} ({where})");
                    }
                }
                else if (kind < 11)
                {
                    if (snapshots.Count >= 3)
                    {
                        snapshots[0].Snapshot.Dispose();
                        snapshots.RemoveAt(0);
                    }
                    snapshots.Add((space.Snapshot(), model.Copy()));
                    dirty.Clear();
                    what = $"snapshot (now {snapshots.Count})";
                }
                else if (kind < 14)
                {
                    int i = random.Next(snapshots.Count);
                    what = $"reset to snapshot {i}";
                    space.Reset(snapshots[i].Snapshot);
                    model = snapshots[i].Model.Copy();
                    dirty.Clear();
                    Assert.That(space.Reset(snapshots[i].Snapshot), Is.Zero, $"a second reset ({where}: {string.Join("; ", done)}; {what})");
                }
                else if (kind == 14)
                {
                    what = "fork";
                    using (AddressSpace child = space.Fork())
                    {
                        AssertModel(child, area, model, $"the child ({where}: {string.Join("; ", done)}; {what})");
                        int p = Array.FindIndex(model.Flags, f => (f & PageFlags.W) != 0);
                        if (p >= 0)
                        {
                            WriteU64(child, area + (ulong)p * Page, 777);
                            Assert.That(HostU64(space, area + (ulong)p * Page), Is.EqualTo(model.Word0[p]), $"the child's write stays in the child ({where})");
                        }
                        AssertHostMirrors(child);
                    }
                    space.Space.Activate();
                    dirty.Clear();
                }
                else if (kind < 17)
                {
                    int a = random.Next(N), b = random.Next(a + 1, N + 1);
                    PageFlags flags = random.Next(3) switch { 0 => PageFlags.R, 1 => PageFlags.None, _ => PageFlags.RW };
                    what = $"protect pages [{a}, {b}) {flags}";
                    space.Protect(Span(area + (ulong)a * Page, (ulong)(b - a) * Page), flags);
                    for (int p = a; p < b; p++) model.Flags[p] = flags;
                }
                else if (kind == 17)
                {
                    int a = random.Next(N), b = random.Next(a + 1, N + 1);
                    what = $"unmap pages [{a}, {b}) and map them again";
                    space.Unmap(Span(area + (ulong)a * Page, (ulong)(b - a) * Page));
                    space.Map((ulong)(b - a) * Page, Lazy, At(area + (ulong)a * Page));
                    for (int p = a; p < b; p++)
                    {
                        model.Word0[p] = model.Word1[p] = 0;
                        model.Flags[p] = PageFlags.RW;
                        dirty.Remove(area + (ulong)p * Page);
                    }
                }
                else if (kind == 18)
                {
                    what = "restart the write watch";
                    space.ResetWriteWatch(Span(area, N * Page));
                    watching = true;
                    hostCopies = false;
                    written.Clear();
                    dirty.Clear();
                }
                else
                {
                    int i = random.Next(snapshots.Count);
                    what = $"instantiate snapshot {i}";
                    using (AddressSpace instance = snapshots[i].Snapshot.Instantiate())
                    {
                        AssertModel(instance, area, snapshots[i].Model, $"an instance ({where}: {string.Join("; ", done)}; {what})");
                        AssertHostMirrors(instance);
                    }
                    space.Space.Activate();
                }
                done.Add(what);
                string at = $"{where}: {string.Join("; ", done)}";
                AssertModel(space, area, model, at);
                Assert.That(space.Space.UsesHostCopies, Is.EqualTo(hostCopies), $"host copies in use ({at})");
                List<ulong> copied = CopiedPages(space, Span(area, N * Page));
                Assert.That(copied, Is.SubsetOf(dirty), $"only pages written since the last snapshot, reset, fork or watch restart are host copies ({at})");
                if (!hostCopies)
                {
                    Assert.That(copied, Is.Empty, $"no host copy after the watch started ({at})");
                    Assert.That(PagesOf(Span(area, N * Page)).Where(va => SlotAt(space, va).IsHostCopy), Is.Empty, $"no host-copy entry after the watch started ({at})");
                }
                Assert.That(space.WrittenPages(Span(area, N * Page)), Is.EqualTo(watching ? written.ToList() : new List<ulong>()), $"the write watch ({at})");
            }
            Assert.That(GuestMemory.MirrorDiffs(space.Space), Is.Empty, $"the host at the end ({where}: {string.Join("; ", done)})");
        }
        finally
        {
            foreach ((VmSnapshot s, ByteModel _) in snapshots) s.Dispose();
            Parent.Space.Activate();
        }
    }

    private static void WriteWord(AddressSpace space, ulong area, ByteModel model, int page, int word, ulong value)
    {
        WriteU64(space, area + (ulong)page * Page + (ulong)word * 2048, value);
        (word == 0 ? model.Word0 : model.Word1)[page] = value;
    }

    /// <summary>Every page reads as the model says: through the host (no fault) where mapped, through the guest where readable, and faults where not.</summary>
    private static void AssertModel(AddressSpace space, ulong area, ByteModel model, string where)
    {
        for (int p = 0; p < model.Flags.Length; p++)
        {
            ulong va = area + (ulong)p * Page;
            if (SlotAt(space, va).IsMapped)
            {
                Assert.That((HostU64(space, va), HostU64(space, va + 2048)), Is.EqualTo((model.Word0[p], model.Word1[p])), $"page {p}, host view ({where})");
                Assert.That(SlotAt(space, va).Rights & ~model.Flags[p], Is.EqualTo(PageFlags.None), $"page {p}: the entry grants no more than the area ({where})");
            }
            else
            {
                Assert.That((model.Word0[p], model.Word1[p]), Is.EqualTo((0UL, 0UL)), $"page {p} is not mapped, so it must be a lazy page never written ({where})");
            }
            var first = new byte[8];
            CopyResult r = TryRead(space, va, first);
            Assert.That(r.IsOk, Is.EqualTo((model.Flags[p] & PageFlags.R) != 0), $"page {p}: a read of a {model.Flags[p]} page ({where})");
            if (r.IsOk)
            {
                Assert.That(BitConverter.ToUInt64(first), Is.EqualTo(model.Word0[p]), $"page {p}, guest view ({where})");
                Assert.That(ReadU64(space, va + 2048), Is.EqualTo(model.Word1[p]), $"page {p} word 1, guest view ({where})");
            }
        }
    }
}

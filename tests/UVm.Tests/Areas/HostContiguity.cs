using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;
using UVm.Tests.TestSupport;

namespace UVm.Tests.Areas;

/// <summary>
/// Host mappings are a finite resource: a lazy area's frames come from one reserved chunk per
/// 2 MiB region (page i at slot i), a copy-on-write copy goes to the same slot of the copier's
/// chunk, and a write fault resolves its whole fault-around window, so a fully written 2 MiB
/// area is one host mapping even after a fork, and random writes cost a mapping per run of windows.
/// </summary>
/// <remarks><see cref="Spaces.VmSpace.CountHostMappings"/> counts every VMA of the arena, the
/// reserved (PROT_NONE) ranges around an area included: an area alone in the space shows as 3.</remarks>
[TestFixture, NonParallelizable, CancelAfter(120_000)]
public sealed class HostContiguity : AreaFixture
{
    private const int RegionPages = 512;

    /// <summary>Maximal runs of equal values in <paramref name="written"/>: the host mappings a mixed region needs.</summary>
    private static int Runs(bool[] written)
    {
        int runs = 1;
        for (int i = 1; i < written.Length; i++) if (written[i] != written[i - 1]) runs++;
        return runs;
    }

    private static void WriteEveryPageInRandomOrder(AddressSpace space, ulong va, int pages, int seed)
    {
        int[] order = Enumerable.Range(0, pages).ToArray();
        new Random(seed).Shuffle(order);
        foreach (int i in order)
            WriteU64(space, va + (ulong)i * Page, (ulong)i);
    }

    [Test]
    public void A_2_MiB_lazy_area_fully_written_costs_one_host_mapping()
    {
        int seed = Seeds.For("host contiguity");
        ulong va = MapLazy(Parent, RegionPages);

        WriteEveryPageInRandomOrder(Parent, va, RegionPages, seed);

        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void After_fork_and_a_full_rewrite_each_space_needs_one_host_mapping_for_the_area()
    {
        int seed = Seeds.For("host contiguity");
        ulong va = MapLazy(Parent, RegionPages);
        Parent.Prefault(Span(va, Huge), PageFaultAccess.Write);
        AddressSpace child = ForkOf(Parent);
        Assert.That(child.Space.CountHostMappings(), Is.EqualTo(3), "installed at fork, merged");

        WriteEveryPageInRandomOrder(child, va, RegionPages, seed);
        Assert.That(child.Stats.CopyOnWritePages, Is.EqualTo(RegionPages), "every page copied once");
        Assert.That(child.Space.CountHostMappings(), Is.EqualTo(3), "copies sit at the same slots of the child's chunk");
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3), "the parent's pages are still one read-only run");
        AssertHostMirrors(Parent, child);

        WriteEveryPageInRandomOrder(Parent, va, RegionPages, unchecked(seed + 1));
        Assert.That(Parent.Stats.CopyOnWriteTakeoverPages, Is.EqualTo(RegionPages), "the child copied everything: the parent takes its frames over");
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3));
        AssertHostMirrors(Parent, child);
    }

    /// <summary>Random writes to half of a forked region's pages; returns which pages were written.</summary>
    private bool[] WriteRandomHalf(AddressSpace space, ulong va, int seed)
    {
        var rng = new Random(seed);
        var written = new bool[RegionPages];
        foreach (int i in Enumerable.Range(0, RegionPages).OrderBy(_ => rng.Next()).Take(RegionPages / 2))
        {
            written[i] = true;
            WriteU64(space, va + (ulong)i * Page, 1);
        }
        return written;
    }

    [Test]
    public void After_fork_and_random_writes_to_half_the_pages_host_mappings_follow_the_written_windows()
    {
        ulong va = MapLazy(Parent, RegionPages);
        Parent.Prefault(Span(va, Huge), PageFaultAccess.Write);
        AddressSpace child = ForkOf(Parent);
        int window = child.FaultAroundPages;
        Assert.That(window, Is.EqualTo(16), "the default window");

        bool[] written = WriteRandomHalf(child, va, Seeds.For("host contiguity"));

        // A write fault copies the shared pages of its whole window, so runs are whole windows.
        bool[] windowWritten = Enumerable.Range(0, RegionPages / window)
            .Select(w => written.Skip(w * window).Take(window).Any(x => x)).ToArray();
        Assert.That(child.Stats.CopyOnWritePages, Is.EqualTo(windowWritten.Count(x => x) * window));
        Assert.That(child.Space.CountHostMappings(), Is.EqualTo(Runs(windowWritten) + 2),
            "one mapping per run of copied and still shared windows, plus the reserved ranges around");
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void Without_a_window_random_copy_on_write_costs_a_host_mapping_per_run_of_written_pages()
    {
        ulong va = MapLazy(Parent, RegionPages);
        Parent.Prefault(Span(va, Huge), PageFaultAccess.Write);
        Parent.FaultAroundPages = 1;
        AddressSpace child = ForkOf(Parent);

        bool[] written = WriteRandomHalf(child, va, Seeds.For("host contiguity"));

        Assert.That(child.Stats.CopyOnWritePages, Is.EqualTo(RegionPages / 2), "only the written pages were copied");
        Assert.That(child.Space.CountHostMappings(), Is.EqualTo(Runs(written) + 2),
            "one mapping per run of written (copied) and unwritten (shared) pages, plus the reserved ranges around");
        Assert.That(Runs(written), Is.GreaterThan(RegionPages / 4), "the price the window avoids");
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void A_write_fault_copies_its_shared_window_with_one_mmap_and_the_other_side_takes_it_over_with_one_mprotect()
    {
        ulong va = MapLazy(Parent, RegionPages);
        Parent.Prefault(Span(va, Huge), PageFaultAccess.Write);
        AddressSpace child = ForkOf(Parent);
        long mmaps = child.Space.HostStats.MmapCalls, mprotects = Parent.Space.HostStats.MprotectCalls;

        WriteU64(child, va + 37 * Page, 37); // window [32, 48)

        Assert.That(child.Stats.CopyOnWriteCopies, Is.EqualTo(1));
        Assert.That(child.Stats.CopyOnWritePages, Is.EqualTo(16));
        Assert.That(child.Space.HostStats.MmapCalls - mmaps, Is.EqualTo(1), "16 copies at consecutive slots: one mmap");
        Dictionary<ulong, PageInfo> copied = Pages(child, Span(va + 32 * Page, 16 * Page));
        Assert.That(copied.Values.Select(p => (p.Flags, p.References)), Is.All.EqualTo((PageFlags.RW, 1)));
        Assert.That(PageAt(child, va + 31 * Page)!.Value.References, Is.EqualTo(2), "outside the window still shared");
        Assert.That(PageAt(child, va + 48 * Page)!.Value.References, Is.EqualTo(2), "outside the window still shared");

        WriteU64(Parent, va + 40 * Page, 40);

        Assert.That(Parent.Stats.CopyOnWriteTakeovers, Is.EqualTo(1));
        Assert.That(Parent.Stats.CopyOnWriteTakeoverPages, Is.EqualTo(16));
        Assert.That(Parent.Space.HostStats.MprotectCalls - mprotects, Is.EqualTo(1), "the window's write access back in one mprotect");
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(5), "reserved, shared, the writable window, shared, reserved");
        Assert.That(ReadU64(child, va + 40 * Page), Is.Zero, "the parent's write is not the child's");
        Assert.That(ReadU64(child, va + 37 * Page), Is.EqualTo(37UL));
        Assert.That(ReadU64(Parent, va + 37 * Page), Is.Zero, "the child's write is not the parent's");
        Assert.That(ReadU64(Parent, va + 40 * Page), Is.EqualTo(40UL));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void A_written_8_MiB_area_needs_at_most_one_host_mapping_per_2_MiB_region()
    {
        ulong va = MapLazy(Parent, 4 * RegionPages);
        Parent.FaultAroundPages = 512;

        Read(Parent, va, (int)(4 * Huge));
        AddressSpace child = ForkOf(Parent);
        Write(child, va, Filled(1, (int)(4 * Huge)));

        Assert.That(Parent.Space.CountHostMappings(), Is.LessThanOrEqualTo(4 + 2));
        Assert.That(child.Space.CountHostMappings(), Is.LessThanOrEqualTo(4 + 2));
        Assert.That(Pool.ReservedChunks, Is.EqualTo(8), "one chunk per region in each space");
        AssertHostMirrors(Parent, child);
    }
}

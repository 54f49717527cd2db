using NUnit.Framework;
using UVm.Areas;
using UVm.Faults;

namespace UVm.Tests.Areas;

/// <summary>
/// Host mappings are a finite resource: a lazy area's frames come from one reserved chunk per
/// 2 MiB region (page i at slot i), and a copy-on-write copy goes to the same slot of the
/// copier's chunk, so a fully written 2 MiB area is one host mapping even after a fork.
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
        ulong va = MapLazy(Parent, RegionPages);

        WriteEveryPageInRandomOrder(Parent, va, RegionPages, 1);

        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3));
        AssertHostMirrors(Parent);
    }

    [Test]
    public void After_fork_and_a_full_rewrite_each_space_needs_one_host_mapping_for_the_area()
    {
        ulong va = MapLazy(Parent, RegionPages);
        Parent.Prefault(Span(va, Huge), PageFaultAccess.Write);
        AddressSpace child = ForkOf(Parent);
        Assert.That(child.Space.CountHostMappings(), Is.EqualTo(3), "installed at fork, merged");

        WriteEveryPageInRandomOrder(child, va, RegionPages, 2);
        Assert.That(child.Stats.CopyOnWriteCopies, Is.EqualTo(RegionPages));
        Assert.That(child.Space.CountHostMappings(), Is.EqualTo(3), "copies sit at the same slots of the child's chunk");
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3), "the parent's pages are still one read-only run");
        AssertHostMirrors(Parent, child);

        WriteEveryPageInRandomOrder(Parent, va, RegionPages, 3);
        Assert.That(Parent.Stats.CopyOnWriteTakeovers, Is.EqualTo(RegionPages), "the child copied everything: the parent takes its frames over");
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3));
        AssertHostMirrors(Parent, child);
    }

    [Test]
    public void After_fork_and_random_writes_to_half_the_pages_host_mappings_follow_the_written_runs()
    {
        ulong va = MapLazy(Parent, RegionPages);
        Parent.Prefault(Span(va, Huge), PageFaultAccess.Write);
        AddressSpace child = ForkOf(Parent);
        var rng = new Random(77);
        var written = new bool[RegionPages];
        foreach (int i in Enumerable.Range(0, RegionPages).OrderBy(_ => rng.Next()).Take(RegionPages / 2))
        {
            written[i] = true;
            WriteU64(child, va + (ulong)i * Page, 1);
        }

        Assert.That(child.Space.CountHostMappings(), Is.EqualTo(Runs(written) + 2),
            "one mapping per run of written (copied) and unwritten (shared) pages, plus the reserved ranges around");
        Assert.That(Parent.Space.CountHostMappings(), Is.EqualTo(3));
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

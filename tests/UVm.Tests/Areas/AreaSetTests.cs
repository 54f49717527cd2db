using NUnit.Framework;
using UVm.Areas;
using UVm.Frames;

namespace UVm.Tests.Areas;

/// <summary>
/// <see cref="AreaSet"/> on its own, without a space or a host: finding, placing, splitting and
/// removing areas, at the edges (address 0, the end of the space, huge alignments, no room).
/// </summary>
[TestFixture, CancelAfter(60_000)]
public sealed class AreaSetTests
{
    private const ulong Page = Paging.PageSize;
    private const ulong Huge = Paging.HugePageSize;
    private const ulong GiB = 1UL << 30;

    private static readonly AreaBackend Lazy = new AreaBackend.Alloc(Populate: false);

    private static VmArea Area(ulong start, ulong length, PageFlags flags = PageFlags.RW, AreaBackend? backend = null) =>
        new(VaddrRange.FromLength(start, length), flags, backend ?? Lazy);

    private static VaddrRange Span(ulong start, ulong length) => VaddrRange.FromLength(start, length);

    private static AreaSet With(ulong end, params VmArea[] areas)
    {
        var set = new AreaSet(end);
        foreach (VmArea a in areas) set.Add(a);
        return set;
    }

    private static VaddrRange Free(AreaSet set, ulong length, ulong align = Page)
    {
        Assert.That(set.TryFindFree(length, align, out VaddrRange range), Is.True, $"a free range of 0x{length:x} aligned to 0x{align:x}");
        return range;
    }

    private static void AssertNoFree(AreaSet set, ulong length, ulong align = Page)
    {
        Assert.That(set.TryFindFree(length, align, out VaddrRange range), Is.False, $"no free range of 0x{length:x} aligned to 0x{align:x}");
        Assert.That(range, Is.EqualTo(default(VaddrRange)));
    }

    private static ulong[] Starts(AreaSet set) => set.ToArray().Select(a => a.Range.Start).ToArray();

    // ---- free range search -------------------------------------------------------------

    [Test]
    public void Address_0_is_never_handed_out()
    {
        var set = new AreaSet(GiB);

        Assert.That(Free(set, Page), Is.EqualTo(Span(Page, Page)));
        Assert.That(Free(set, Page, Huge), Is.EqualTo(Span(Huge, Page)));
        Assert.That(Free(With(GiB, Area(2 * Page, Page)), Page), Is.EqualTo(Span(Page, Page)), "the page below an area, still not 0");
        AssertNoFree(new AreaSet(Page), Page);
        AssertNoFree(new AreaSet(2 * Page), 2 * Page);
    }

    [Test]
    public void A_free_range_may_end_exactly_at_the_end_of_the_space()
    {
        var set = new AreaSet(GiB);

        Assert.That(Free(set, GiB - Page), Is.EqualTo(new VaddrRange(Page, GiB)));
        AssertNoFree(set, GiB);
        AssertNoFree(set, GiB - Page, 2 * Page);

        set.Add(Area(Page, GiB - 2 * Page));
        Assert.That(Free(set, Page), Is.EqualTo(new VaddrRange(GiB - Page, GiB)), "the last page, after the area");
        AssertNoFree(set, 2 * Page);
    }

    [Test]
    public void The_first_gap_that_fits_wins_with_its_alignment()
    {
        var set = With(GiB, Area(Page, Page), Area(4 * Page, Page), Area(9 * Page, Page), Area(3 * Huge, Page));

        Assert.That(Free(set, 2 * Page), Is.EqualTo(Span(2 * Page, 2 * Page)), "[2, 4) fits two pages");
        Assert.That(Free(set, 3 * Page), Is.EqualTo(Span(5 * Page, 3 * Page)), "[5, 9) fits three");
        Assert.That(Free(set, 5 * Page), Is.EqualTo(Span(10 * Page, 5 * Page)), "no gap below fits five");
        Assert.That(Free(set, Page, 8 * Page), Is.EqualTo(Span(8 * Page, Page)), "8 is aligned and free");
        Assert.That(Free(set, 2 * Page, 8 * Page), Is.EqualTo(Span(16 * Page, 2 * Page)), "[8, 9) is too short for two");
        Assert.That(Free(set, Huge, Huge), Is.EqualTo(Span(Huge, Huge)));
        Assert.That(Free(set, 2 * Huge, Huge), Is.EqualTo(Span(Huge, 2 * Huge)), "ends exactly where the area at 3 huge pages starts");
        Assert.That(Free(set, 3 * Huge, Huge), Is.EqualTo(Span(4 * Huge, 3 * Huge)), "the next huge-page boundary after that area");
    }

    [Test]
    public void Alignment_up_to_2_pow_63_is_found_or_refused_without_wrapping()
    {
        const ulong Top = 1UL << 63;

        AssertNoFree(new AreaSet(Paging.MaxUserSpace), Page, Top);
        Assert.That(Free(new AreaSet(Paging.MaxUserSpace), Page, Paging.MaxUserSpace / 2), Is.EqualTo(Span(Paging.MaxUserSpace / 2, Page)));

        // A set reaching past 2^63 (a pure structure may): the one aligned address above 0 fits.
        Assert.That(Free(new AreaSet(Top + Huge), Huge, Top), Is.EqualTo(Span(Top, Huge)));
        AssertNoFree(new AreaSet(Top + Huge), Huge + Page, Top);

        // An area ending near 2^64: rounding its end up to 2^63 would wrap to 0.
        ulong end = ulong.MaxValue - (Page - 1);
        var set = With(end, Area(Top + Page, end - (Top + Page)));
        Assert.That(Free(set, Page, Top), Is.EqualTo(Span(Top, Page)), "one page fits below the area");
        AssertNoFree(set, 2 * Page, Top);
        Assert.That(Free(set, 2 * Page), Is.EqualTo(Span(Page, 2 * Page)), "page alignment fits low");
    }

    [Test]
    public void A_full_or_too_small_space_has_no_free_range()
    {
        var set = With(4 * Huge, Area(Page, 4 * Huge - Page));

        AssertNoFree(set, Page);
        AssertNoFree(new AreaSet(4 * Huge), 4 * Huge);
        AssertNoFree(new AreaSet(4 * Huge), ulong.MaxValue & ~(Page - 1));
        AssertNoFree(With(4 * Huge, Area(Huge, Page)), Page, 4 * Huge);
    }

    // ---- find and overlap --------------------------------------------------------------

    [Test]
    public void Find_covers_an_area_from_its_start_to_its_last_byte()
    {
        VmArea a = Area(8 * Page, 4 * Page), b = Area(12 * Page, Page);
        var set = With(GiB, a, b);

        Assert.That(set.TryFind(8 * Page - 1, out _), Is.False);
        Assert.That(set.TryFind(8 * Page, out VmArea? found) ? found : null, Is.EqualTo(a));
        Assert.That(set.TryFind(12 * Page - 1, out found) ? found : null, Is.EqualTo(a));
        Assert.That(set.TryFind(12 * Page, out found) ? found : null, Is.EqualTo(b), "adjacent areas: the address belongs to the second");
        Assert.That(set.TryFind(13 * Page, out found), Is.False);
        Assert.That(found, Is.Null);
        Assert.That(new AreaSet(GiB).TryFind(0, out _), Is.False);
    }

    [Test]
    public void Overlap_and_areas_in_a_range_treat_ends_as_exclusive()
    {
        VmArea a = Area(8 * Page, 4 * Page), b = Area(20 * Page, 2 * Page);
        var set = With(GiB, a, b);

        Assert.That(set.Overlaps(new VaddrRange(0, 8 * Page)), Is.False, "ends where a starts");
        Assert.That(set.Overlaps(new VaddrRange(12 * Page, 20 * Page)), Is.False, "the gap between them");
        Assert.That(set.Overlaps(new VaddrRange(11 * Page, 12 * Page)), Is.True);
        Assert.That(set.Overlaps(new VaddrRange(0, GiB)), Is.True);
        Assert.That(set.Overlaps(new VaddrRange(9 * Page, 9 * Page)), Is.False, "an empty range overlaps nothing");

        Assert.That(set.InRange(new VaddrRange(0, GiB)), Is.EqualTo(new[] { a, b }));
        Assert.That(set.InRange(new VaddrRange(11 * Page, 21 * Page)), Is.EqualTo(new[] { a, b }));
        Assert.That(set.InRange(new VaddrRange(12 * Page, 20 * Page)), Is.Empty);
        Assert.That(set.InRange(new VaddrRange(21 * Page, GiB)), Is.EqualTo(new[] { b }));
        Assert.That(set.InRange(new VaddrRange(9 * Page, 9 * Page)), Is.Empty);
    }

    [Test]
    public void Areas_touching_the_end_of_the_space_are_found_split_and_removed()
    {
        VmArea last = Area(GiB - 4 * Page, 4 * Page);
        var set = With(GiB, last);

        Assert.That(set.TryFind(GiB - 1, out VmArea? found) ? found : null, Is.EqualTo(last));
        Assert.That(set.Overlaps(new VaddrRange(GiB - Page, GiB)), Is.True);
        set.SplitAt(GiB);
        Assert.That(set.ToArray(), Is.EqualTo(new[] { last }), "splitting at the end changes nothing");

        Assert.That(set.Remove(new VaddrRange(GiB - Page, GiB)), Is.EqualTo(new[] { Area(GiB - Page, Page) }));
        Assert.That(set.ToArray(), Is.EqualTo(new[] { Area(GiB - 4 * Page, 3 * Page) }));
        Assert.That(set.Overlaps(new VaddrRange(GiB - Page, GiB)), Is.False);
        set.Add(Area(Page, GiB - 5 * Page));
        Assert.That(Free(set, Page), Is.EqualTo(new VaddrRange(GiB - Page, GiB)), "the freed last page is the only free one");
        AssertNoFree(set, 2 * Page);
    }

    // ---- add, replace, split, remove ---------------------------------------------------

    [Test]
    public void Adding_an_empty_overlapping_or_out_of_range_area_is_refused()
    {
        var set = With(GiB, Area(8 * Page, 4 * Page));

        Assert.Throws<InvalidOperationException>(() => set.Add(Area(11 * Page, 2 * Page)), "overlaps the end");
        Assert.Throws<InvalidOperationException>(() => set.Add(Area(7 * Page, 2 * Page)), "overlaps the start");
        Assert.Throws<InvalidOperationException>(() => set.Add(Area(8 * Page, 4 * Page)), "the same range");
        Assert.Throws<InvalidOperationException>(() => set.Add(Area(GiB - Page, 2 * Page)), "past the end");
        Assert.Throws<InvalidOperationException>(() => set.Add(Area(Page, 0)), "empty");
        Assert.That(set.Count, Is.EqualTo(1));

        set.Add(Area(12 * Page, Page));
        set.Add(Area(7 * Page, Page));
        Assert.That(Starts(set), Is.EqualTo(new[] { 7 * Page, 8 * Page, 12 * Page }), "adjacent areas fit; the set keeps address order");
    }

    [Test]
    public void Unmapping_the_middle_splits_at_both_ends_and_moves_linear_offsets()
    {
        using var pool = new FramePool(4 * Huge);
        using USegment segment = pool.AllocSegment(8);
        var linear = new AreaBackend.LinearFrames(segment, Page);
        var set = With(GiB, Area(16 * Page, 7 * Page, PageFlags.R, linear));

        List<VmArea> removed = set.Remove(Span(18 * Page, 3 * Page));

        Assert.That(removed, Is.EqualTo(new[] { Area(18 * Page, 3 * Page, PageFlags.R, linear with { Offset = 3 * Page }) }));
        Assert.That(set.ToArray(), Is.EqualTo(new[]
        {
            Area(16 * Page, 2 * Page, PageFlags.R, linear),
            Area(21 * Page, 2 * Page, PageFlags.R, linear with { Offset = 6 * Page }),
        }));
    }

    [Test]
    public void Splits_at_an_areas_own_ends_or_outside_every_area_change_nothing()
    {
        VmArea a = Area(8 * Page, 4 * Page);
        var set = With(GiB, a);

        foreach (ulong va in new ulong[] { 0, 8 * Page, 12 * Page, 100 * Page }) set.SplitAt(va);
        Assert.That(set.ToArray(), Is.EqualTo(new[] { a }));

        Assert.That(set.SplitAround(Span(8 * Page, 4 * Page)), Is.EqualTo(new[] { a }));
        Assert.That(set.SplitAround(Span(8 * Page, Page)), Is.EqualTo(new[] { Area(8 * Page, Page) }), "split at the range's end only");
        Assert.That(set.SplitAround(Span(11 * Page, Page)), Is.EqualTo(new[] { Area(11 * Page, Page) }), "split at the range's start only");
        Assert.That(Starts(set), Is.EqualTo(new[] { 8 * Page, 9 * Page, 11 * Page }));
        Assert.That(set.Remove(Span(0, 8 * Page)), Is.Empty, "a hole");
    }

    [Test]
    public void A_range_over_several_areas_and_holes_removes_only_what_is_inside()
    {
        var set = With(GiB, Area(Page, 4 * Page), Area(8 * Page, 2 * Page), Area(12 * Page, 4 * Page));

        List<VmArea> removed = set.Remove(new VaddrRange(3 * Page, 14 * Page));

        Assert.That(removed, Is.EqualTo(new[] { Area(3 * Page, 2 * Page), Area(8 * Page, 2 * Page), Area(12 * Page, 2 * Page) }));
        Assert.That(set.ToArray(), Is.EqualTo(new[] { Area(Page, 2 * Page), Area(14 * Page, 2 * Page) }));
    }

    [Test]
    public void Replace_changes_an_area_with_exactly_that_range()
    {
        var set = With(GiB, Area(8 * Page, 4 * Page));

        set.Replace(Area(8 * Page, 4 * Page, PageFlags.R));
        Assert.That(set.ToArray(), Is.EqualTo(new[] { Area(8 * Page, 4 * Page, PageFlags.R) }));
        Assert.Throws<InvalidOperationException>(() => set.Replace(Area(8 * Page, 2 * Page)));
        Assert.Throws<InvalidOperationException>(() => set.Replace(Area(16 * Page, Page)));
    }

    [Test]
    public void A_clone_is_independent_of_its_original()
    {
        var set = With(GiB, Area(8 * Page, 4 * Page));
        AreaSet clone = set.Clone();

        clone.Remove(Span(8 * Page, Page));
        set.Add(Area(16 * Page, Page));

        Assert.That(Starts(set), Is.EqualTo(new[] { 8 * Page, 16 * Page }));
        Assert.That(Starts(clone), Is.EqualTo(new[] { 9 * Page }));
        Assert.That(clone.End, Is.EqualTo(GiB));
    }
}

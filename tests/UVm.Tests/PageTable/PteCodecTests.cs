using NUnit.Framework;
using UVm.Interop;
using UVm.PageTable;

namespace UVm.Tests.PageTable;

/// <summary>
/// The page-table entry codec alone (<c>Pte</c>): every property round-trips, the address field
/// is bits 12..51 and nothing else, the huge bit follows the level, and rights changes keep what
/// only the library may set.
/// </summary>
public sealed class PteCodecTests
{
    private const PageFlags AllFlags = PageFlags.R | PageFlags.W | PageFlags.X | PageFlags.Accessed | PageFlags.Dirty | PageFlags.Avail1 | PageFlags.Avail2;
    private const PrivilegedPageFlags AllPriv = PrivilegedPageFlags.User | PrivilegedPageFlags.Global | PrivilegedPageFlags.Avail1;

    /// <summary>Every combination of the flags UVm defines, with every cache policy.</summary>
    private static IEnumerable<PageProperty> EveryProperty()
    {
        for (int f = 0; f <= (int)AllFlags; f++)
        {
            if ((f & ~(int)AllFlags) != 0) continue;
            for (int p = 0; p <= (int)AllPriv; p++)
                foreach (CachePolicy cache in Enum.GetValues<CachePolicy>())
                    yield return new PageProperty((PageFlags)f, cache, (PrivilegedPageFlags)p);
        }
    }

    [Test]
    public void Every_property_round_trips_through_the_entry()
    {
        int n = 0;
        foreach (PageProperty prop in EveryProperty())
        {
            ulong bits = Pte.FromProp(prop);
            Assert.That(Pte.ToProp(bits), Is.EqualTo(prop), $"{prop}: 0x{bits:x16}");
            Assert.That(bits & (Pte.Present | Pte.Huge | Pte.AddrMask), Is.Zero, $"{prop} sets only property bits");
            foreach (ulong paddr in new[] { 0UL, 0x1000UL, 0x000F_FFFF_FFFF_F000UL })
                foreach (int level in new[] { 1, 2, 3 })
                    Assert.That(Pte.ToProp(Pte.Leaf(paddr, prop, level)), Is.EqualTo(prop), $"{prop} at 0x{paddr:x}, level {level}");
            n++;
        }
        Assert.That(n, Is.EqualTo(128 * 8 * Enum.GetValues<CachePolicy>().Length), "precondition: every combination was tried");
    }

    [TestCase(PageFlags.R, Pte.Readable)]
    [TestCase(PageFlags.W, Pte.Writable)]
    [TestCase(PageFlags.Accessed, Pte.Accessed)]
    [TestCase(PageFlags.Dirty, Pte.Dirty)]
    [TestCase(PageFlags.Avail1, Pte.Avail1)]
    [TestCase(PageFlags.Avail2, Pte.Avail2)]
    public void Each_flag_has_its_own_bit(PageFlags flag, ulong bit)
    {
        ulong with = Pte.FromProp(new PageProperty(flag | PageFlags.X, CachePolicy.Writeback, PrivilegedPageFlags.None));
        ulong without = Pte.FromProp(new PageProperty(PageFlags.X, CachePolicy.Writeback, PrivilegedPageFlags.None));
        Assert.That(with ^ without, Is.EqualTo(bit));
    }

    [TestCase(PrivilegedPageFlags.User, Pte.User)]
    [TestCase(PrivilegedPageFlags.Global, Pte.Global)]
    [TestCase(PrivilegedPageFlags.Avail1, Pte.Untracked)]
    public void Each_privileged_flag_has_its_own_bit(PrivilegedPageFlags flag, ulong bit)
    {
        ulong with = Pte.FromProp(new PageProperty(PageFlags.X, CachePolicy.Writeback, flag));
        ulong without = Pte.FromProp(new PageProperty(PageFlags.X, CachePolicy.Writeback, PrivilegedPageFlags.None));
        Assert.That(with ^ without, Is.EqualTo(bit));
    }

    [Test]
    public void Execute_is_the_absence_of_the_no_execute_bit()
    {
        Assert.That(Pte.FromProp(PageProperty.New(PageFlags.R)) & Pte.NoExec, Is.EqualTo(Pte.NoExec));
        Assert.That(Pte.FromProp(PageProperty.New(PageFlags.RX)) & Pte.NoExec, Is.Zero);
    }

    [Test]
    public void The_cache_policy_stays_in_its_field()
    {
        const ulong field = 7UL << 59;
        foreach (CachePolicy cache in Enum.GetValues<CachePolicy>())
        {
            ulong bits = Pte.FromProp(new PageProperty(PageFlags.RX, cache, PrivilegedPageFlags.None));
            Assert.That(bits & field, Is.EqualTo((ulong)cache << 59));
            Assert.That(bits & ~field, Is.EqualTo(Pte.Readable), $"{cache}: nothing outside the field but R");
        }
    }

    [TestCase(8)]
    [TestCase(16)]
    [TestCase(255)]
    public void A_cache_value_outside_the_field_never_reaches_the_neighbouring_bits(int value)
    {
        // A caller can cast any byte to CachePolicy; bits 62 and 63 (no-execute) are not the cache's.
        ulong bits = Pte.FromProp(new PageProperty(PageFlags.RX, (CachePolicy)value, PrivilegedPageFlags.None));
        Assert.That(bits & ~(7UL << 59), Is.EqualTo(Pte.Readable), $"0x{bits:x16}");
        Assert.That(Pte.ToProp(bits).Flags, Is.EqualTo(PageFlags.RX), "still executable");
    }

    [Test]
    public void Addresses_fill_bits_12_to_51()
    {
        PageProperty prop = PageProperty.New(PageFlags.RWX);
        foreach (ulong paddr in new[] { 1UL << 12, 1UL << 51, (1UL << 12) | (1UL << 51), 0x000F_FFFF_FFFF_F000UL, 0x1234_5678_9000UL })
        {
            ulong pte = Pte.Leaf(paddr, prop, 1);
            Assert.That(Pte.Paddr(pte), Is.EqualTo(paddr), $"0x{paddr:x}");
            Assert.That(Pte.IsPresent(pte), Is.True);
            Assert.That(Pte.ToProp(pte), Is.EqualTo(prop));
        }
        Assert.That(Pte.AddrMask, Is.EqualTo(((1UL << 52) - 1) & ~0xFFFUL));
    }

    [Test]
    public void Bits_of_an_address_above_51_and_below_12_are_masked_off()
    {
        PageProperty prop = new(PageFlags.R, CachePolicy.Writeback, PrivilegedPageFlags.None);
        ulong clean = Pte.Leaf(0x5000, prop, 1);
        foreach (ulong stray in new[] { 1UL << 52, 1UL << 59, 1UL << 63, 0xFFF0_0000_0000_0000UL, 0xFFFUL, 1UL })
        {
            ulong pte = Pte.Leaf(0x5000 | stray, prop, 1);
            Assert.That(pte, Is.EqualTo(clean), $"stray bits 0x{stray:x16} change nothing: not Avail2, cache or NX");
            Assert.That(Pte.Paddr(pte), Is.EqualTo(0x5000UL));
        }
        Assert.That(Pte.Paddr(ulong.MaxValue), Is.EqualTo(Pte.AddrMask));
    }

    [Test]
    public void The_huge_bit_follows_the_level()
    {
        PageProperty prop = PageProperty.New(PageFlags.RW);
        ulong small = Pte.Leaf(0x20_0000, prop, 1), big = Pte.Leaf(0x20_0000, prop, 2), giant = Pte.Leaf(0x4000_0000, prop, 3);
        Assert.That(small & Pte.Huge, Is.Zero, "a level-1 leaf is not huge");
        Assert.That(big & Pte.Huge, Is.EqualTo(Pte.Huge));
        Assert.That(giant & Pte.Huge, Is.EqualTo(Pte.Huge));
        Assert.That(big & ~Pte.Huge, Is.EqualTo(small), "the rest is the same");
        Assert.That(Pte.IsLast(small, 1), Is.True);
        Assert.That(Pte.IsLast(big, 2), Is.True);
        Assert.That(Pte.IsLast(giant, 3), Is.True);
        Assert.That(Pte.IsLast(Pte.Table(), 2), Is.False, "a table entry above level 1 points to a node");
        Assert.That(Pte.IsLast(Pte.Table(), 1), Is.True, "at level 1 every entry is a leaf");
        Assert.That(Pte.IsPresent(Pte.Table()), Is.True);
        Assert.That(Pte.IsPresent(0), Is.False);
        Assert.That(Pte.IsPresent(small & ~Pte.Present), Is.False);
    }

    [Test]
    public void A_rights_change_keeps_address_huge_and_untracked_bits()
    {
        ulong io = Pte.Leaf(0x40_0000, new PageProperty(PageFlags.RW, CachePolicy.Uncacheable, PrivilegedPageFlags.User | PrivilegedPageFlags.Avail1), 2);
        Assert.That(Pte.IsUntracked(io), Is.True);
        ulong changed = Pte.WithProp(io, PageProperty.New(PageFlags.R));
        Assert.That(Pte.IsUntracked(changed), Is.True, "the untracked bit is UVm's: a rights change keeps it");
        Assert.That(Pte.Paddr(changed), Is.EqualTo(0x40_0000UL));
        Assert.That(changed & Pte.Huge, Is.EqualTo(Pte.Huge));
        Assert.That(Pte.IsPresent(changed), Is.True);
        Assert.That(Pte.ToProp(changed), Is.EqualTo(new PageProperty(PageFlags.R, CachePolicy.Writeback, PrivilegedPageFlags.User | PrivilegedPageFlags.Avail1)));

        ulong tracked = Pte.Leaf(0x7000, PageProperty.New(PageFlags.RW), 1);
        ulong asked = Pte.WithProp(tracked, new PageProperty(PageFlags.RX, CachePolicy.Writethrough, PrivilegedPageFlags.User | PrivilegedPageFlags.Avail1));
        Assert.That(Pte.IsUntracked(asked), Is.False, "nor can a rights change make a tracked frame untracked");
        Assert.That(asked & Pte.Huge, Is.Zero);
        Assert.That(Pte.ToProp(asked), Is.EqualTo(new PageProperty(PageFlags.RX, CachePolicy.Writethrough, PrivilegedPageFlags.User)));
    }

    [Test]
    public void A_rights_change_replaces_every_other_property_bit()
    {
        foreach (PageProperty from in new[] { new PageProperty(AllFlags, CachePolicy.WriteProtected, AllPriv & ~PrivilegedPageFlags.Avail1), PageProperty.New(PageFlags.None) })
        {
            ulong pte = Pte.Leaf(0x9000, from, 1);
            foreach (PageProperty to in EveryProperty().Where(p => (p.PrivFlags & PrivilegedPageFlags.Avail1) == 0))
                Assert.That(Pte.WithProp(pte, to), Is.EqualTo(Pte.Leaf(0x9000, to, 1)), $"{from} -> {to}");
        }
    }

    [Test]
    public void Host_protection_mirrors_R_W_and_X()
    {
        for (int f = 0; f <= (int)PageFlags.RWX; f++)
        {
            var flags = (PageFlags)f;
            ulong pte = Pte.Leaf(0x1000, PageProperty.New(flags | PageFlags.Accessed | PageFlags.Dirty), 1);
            int expected = ((flags & PageFlags.R) != 0 ? Libc.PROT_READ : 0)
                           | ((flags & PageFlags.W) != 0 ? Libc.PROT_WRITE : 0)
                           | ((flags & PageFlags.X) != 0 ? Libc.PROT_EXEC : 0);
            Assert.That(Pte.HostProt(pte), Is.EqualTo(expected), flags.ToString());
        }
        Assert.That(Pte.HostProt(Pte.Leaf(0x1000, PageProperty.New(PageFlags.None), 2)), Is.EqualTo(Libc.PROT_NONE));
    }
}

using System.Text;
using NUnit.Framework;
using UVm.Faults;
using UVm.Io;
using UVm.Tests.Faults;

namespace UVm.Tests.Io;

/// <summary>
/// <c>ReadCString</c>: reads up to and including the NUL, and only moves the cursor when it
/// found one.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class GuestCStrings : GuestFixture
{
    private void Put(ulong va, string text)
    {
        byte[] bytes = Encoding.ASCII.GetBytes(text);
        var writer = Space.Writer(va, (ulong)bytes.Length);
        Assert.That(writer.WriteFallible(bytes).IsOk, "test setup");
    }

    [Test]
    public void A_string_is_read_up_to_its_nul_and_the_cursor_moves_past_it()
    {
        MapFilled(Va, 0xFF);
        Put(Va + 10, "hello\0world\0");
        byte[] buffer = Filled(64, 0xEE);

        var reader = Space.Reader(Va + 10, 100);
        IoResult<int> r = reader.ReadCString(buffer);

        Assert.That(r, Is.EqualTo(new IoResult<int>(5, null, null)));
        Assert.That(Encoding.ASCII.GetString(buffer, 0, 6), Is.EqualTo("hello\0"));
        Assert.That(reader.GuestAddress(), Is.EqualTo(Va + 16));

        IoResult<int> next = reader.ReadCString(buffer);
        Assert.That(next.Value, Is.EqualTo(5));
        Assert.That(Encoding.ASCII.GetString(buffer, 0, 5), Is.EqualTo("world"));
    }

    [Test]
    public void An_empty_string_has_length_zero()
    {
        MapFilled(Va, 0);
        var reader = Space.Reader(Va, 16);
        Assert.That(reader.ReadCString(new byte[4]), Is.EqualTo(new IoResult<int>(0, null, null)));
        Assert.That(reader.Remain, Is.EqualTo(15UL));
    }

    [Test]
    public void A_string_that_fills_the_buffer_exactly_with_its_nul_is_read()
    {
        MapFilled(Va, 0xFF);
        Put(Va, "abc\0");
        var reader = Space.Reader(Va, 100);
        Assert.That(reader.ReadCString(new byte[4]).Value, Is.EqualTo(3));
    }

    [Test]
    public void No_nul_within_the_buffer_is_invalid_and_does_not_move()
    {
        MapFilled(Va, 0xFF);
        Put(Va, "abcd\0");
        var reader = Space.Reader(Va, 100);
        IoResult<int> r = reader.ReadCString(new byte[4]);

        Assert.That(r, Is.EqualTo(new IoResult<int>(0, UVmError.InvalidArgs, null)));
        Assert.That(reader.Remain, Is.EqualTo(100UL));
    }

    [Test]
    public void No_nul_within_the_reader_range_is_invalid()
    {
        MapFilled(Va, 0xFF);
        Put(Va, "abcd\0");
        var reader = Space.Reader(Va, 4);
        Assert.That(reader.ReadCString(new byte[64]).Error, Is.EqualTo(UVmError.InvalidArgs));
        Assert.That(reader.Remain, Is.EqualTo(4UL));
    }

    [Test]
    public void A_nul_right_before_a_hole_ends_the_string_without_faulting()
    {
        MapFilled(Va, 0xFF);
        Put(Va + Page - 6, "tail\0\0");
        byte[] buffer = new byte[256];

        var reader = Space.Reader(Va + Page - 6, 256);
        IoResult<int> r = reader.ReadCString(buffer);
        Assert.That(r.Value, Is.EqualTo(4));
        Assert.That(r.IsOk);

        IoResult<int> last = reader.ReadCString(buffer);
        Assert.That(last, Is.EqualTo(new IoResult<int>(0, null, null)), "the NUL in the page's last byte");
        Assert.That(reader.GuestAddress(), Is.EqualTo(Va + Page));
        Assert.That(Space.UnresolvedFaults, Is.Zero);
    }

    [Test]
    public void A_string_running_into_a_hole_is_a_page_fault_and_does_not_move()
    {
        MapFilled(Va, (byte)'x');
        var reader = Space.Reader(Va + Page - 20, 256);
        IoResult<int> r = reader.ReadCString(new byte[256]);

        Assert.That(r.Error, Is.EqualTo(UVmError.PageFault));
        Assert.That(r.Fault, Is.EqualTo(new PageFaultInfo(Va + Page, PageFaultAccess.Read, PageFaultKind.NotPresent, 11)));
        Assert.That(reader.Remain, Is.EqualTo(256UL));
    }

    [Test]
    public void A_string_spanning_two_pages_is_read_whole()
    {
        MapFilled(Va, 0xFF);
        MapFilled(Va + Page, 0xFF);
        string text = new string('s', 300);
        Put(Va + Page - 100, text + "\0");
        byte[] buffer = new byte[1024];

        var reader = Space.Reader(Va + Page - 100, 1024);
        Assert.That(reader.ReadCString(buffer).Value, Is.EqualTo(300));
        Assert.That(Encoding.ASCII.GetString(buffer, 0, 300), Is.EqualTo(text));
    }
}

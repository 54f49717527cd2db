using System.Runtime.CompilerServices;

namespace UVm.Io;

/// <summary>
/// A forward-only cursor that writes a range of memory; the counterpart of
/// <see cref="VmReader{TMode}"/>.
/// </summary>
/// <remarks>A ref struct: it cannot outlive the stack frame that holds it, and is not thread-safe.</remarks>
public unsafe ref struct VmWriter<TMode> where TMode : struct, IAccessMode
{
    internal byte* _cursor;
    internal byte* _end;
    internal readonly GuestAccess _guest; // set for guest memory (Fallible) only

    internal VmWriter(byte* start, ulong length)
    {
        _cursor = start;
        _end = start + length;
        _guest = default;
    }

    internal VmWriter(GuestAccess guest, byte* start, ulong length)
    {
        _cursor = start;
        _end = start + length;
        _guest = guest;
    }

    /// <summary>Bytes of room left.</summary>
    public readonly ulong Avail => (ulong)(_end - _cursor);

    /// <summary>Whether any room is left.</summary>
    public readonly bool HasAvail => _cursor < _end;

    /// <summary>The host address of the next byte to write.</summary>
    public readonly nint Cursor => (nint)_cursor;

    /// <summary>Shrinks the writable range to at most <paramref name="maxAvail"/> bytes.</summary>
    public void Limit(ulong maxAvail)
    {
        if (maxAvail < Avail) _end = _cursor + maxAvail;
    }

    /// <summary>Skips <paramref name="bytes"/> bytes without writing them.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Less than <paramref name="bytes"/> bytes of room remain.</exception>
    public void Skip(ulong bytes)
    {
        if (bytes > Avail) ThrowHelper.OutOfRange($"only {Avail} bytes of room remain", nameof(bytes));
        _cursor += bytes;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Advance(ulong bytes) => _cursor += bytes;
}

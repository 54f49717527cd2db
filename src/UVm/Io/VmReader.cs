using System.Runtime.CompilerServices;
using UVm.Faults;

namespace UVm.Io;

/// <summary>
/// A forward-only cursor that reads a range of memory. <typeparamref name="TMode"/> says
/// whether the memory can fault (<see cref="Fallible"/>) or not (<see cref="Infallible"/>);
/// the operations of each mode are extension methods in <see cref="InfallibleIo"/> and its
/// fallible counterpart.
/// </summary>
/// <remarks>A ref struct: it cannot outlive the stack frame that holds it, and is not thread-safe.</remarks>
public unsafe ref struct VmReader<TMode> where TMode : struct, IAccessMode
{
    internal byte* _cursor;
    internal byte* _end;
    internal readonly GuestAccess _guest; // set for guest memory (Fallible) only

    internal VmReader(byte* start, ulong length)
    {
        _cursor = start;
        _end = start + length;
        _guest = default;
    }

    internal VmReader(GuestAccess guest, byte* start, ulong length)
    {
        _cursor = start;
        _end = start + length;
        _guest = guest;
    }

    /// <summary>Bytes left to read.</summary>
    public readonly ulong Remain => (ulong)(_end - _cursor);

    /// <summary>Whether any byte is left to read.</summary>
    public readonly bool HasRemain => _cursor < _end;

    /// <summary>The host address of the next byte to read.</summary>
    public readonly nint Cursor => (nint)_cursor;

    /// <summary>Shrinks the readable range to at most <paramref name="maxRemain"/> bytes.</summary>
    public void Limit(ulong maxRemain)
    {
        if (maxRemain < Remain) _end = _cursor + maxRemain;
    }

    /// <summary>Skips <paramref name="bytes"/> bytes without reading them.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than <paramref name="bytes"/> bytes remain.</exception>
    public void Skip(ulong bytes)
    {
        if (bytes > Remain) ThrowHelper.OutOfRange($"only {Remain} bytes remain", nameof(bytes));
        _cursor += bytes;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Advance(ulong bytes) => _cursor += bytes;
}

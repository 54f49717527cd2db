namespace UVm.Io;

/// <summary>
/// A range of guest memory as the guest names it, <c>[Va, Va + Length)</c>, for scatter and
/// gather (an I/O vector entry, like <c>struct iovec</c>). Nothing is checked when it is made:
/// the guest controls both numbers, so a range that passes the end of the space or whose end
/// overflows is reported by the access that reaches its first byte outside the space, as a
/// fault of kind <see cref="Faults.PageFaultKind.OutOfRange"/>.
/// </summary>
/// <param name="Va">The guest address of the first byte.</param>
/// <param name="Length">Bytes in the range; 0 is an empty range, which no access touches.</param>
public readonly record struct GuestRange(ulong Va, ulong Length);

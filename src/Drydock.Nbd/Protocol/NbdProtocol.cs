namespace Drydock.Nbd.Protocol;

// Every wire constant of the NBD protocol that Drydock speaks, in one place.
// Source: the NBD protocol specification, NetworkBlockDevice/nbd doc/proto.md.
// All integers travel in network byte order (big-endian).

/// <summary>Magic numbers and fixed sizes of the NBD protocol.</summary>
public static class NbdMagic
{
    /// <summary>"NBDMAGIC": first 8 bytes the server sends.</summary>
    public const ulong InitPassword = 0x4e42444d41474943;

    /// <summary>"IHAVEOPT": newstyle negotiation magic, also prefixes every client option.</summary>
    public const ulong IHaveOpt = 0x49484156454F5054;

    /// <summary>Oldstyle negotiation magic (not supported by Drydock, detected for a clear error).</summary>
    public const ulong OldStyle = 0x00420281861253;

    /// <summary>Prefix of every option reply.</summary>
    public const ulong OptionReply = 0x0003e889045565a9;

    /// <summary>Prefix of every transmission request.</summary>
    public const uint Request = 0x25609513;

    /// <summary>Prefix of a simple reply.</summary>
    public const uint SimpleReply = 0x67446698;

    /// <summary>Prefix of a structured reply chunk.</summary>
    public const uint StructuredReply = 0x668e33ef;

    /// <summary>Prefix of an extended-header reply (recognised only to reject it: never negotiated).</summary>
    public const uint ExtendedReply = 0x6e8a278c;
}

/// <summary>Sizes of fixed protocol structures, in bytes.</summary>
public static class NbdSizes
{
    /// <summary>Server greeting: NBDMAGIC + IHAVEOPT + 16-bit handshake flags.</summary>
    public const int ServerGreeting = 18;

    /// <summary>Client flags after the greeting.</summary>
    public const int ClientFlags = 4;

    /// <summary>Option header: IHAVEOPT + option + length.</summary>
    public const int OptionHeader = 16;

    /// <summary>Option reply header: magic + option + reply type + length.</summary>
    public const int OptionReplyHeader = 20;

    /// <summary>Transmission request header (compact form).</summary>
    public const int RequestHeader = 28;

    /// <summary>Simple reply header.</summary>
    public const int SimpleReplyHeader = 16;

    /// <summary>Structured reply chunk header.</summary>
    public const int StructuredReplyHeader = 20;

    /// <summary>Zero padding after NBD_OPT_EXPORT_NAME when NO_ZEROES is not negotiated.</summary>
    public const int ExportNamePadding = 124;

    /// <summary>Longest string (export name, context name, error message) the specification allows.</summary>
    public const int MaxString = 4096;

    /// <summary>Default maximum payload when the server states no block-size constraints: 32 MiB.</summary>
    public const uint DefaultMaxPayload = 32 * 1024 * 1024;

    /// <summary>Largest minimum block size the specification allows.</summary>
    public const uint MaxMinimumBlockSize = 64 * 1024;

    /// <summary>Size of one block-status descriptor (length + flags).</summary>
    public const int BlockDescriptor = 8;
}

/// <summary>Handshake flags the server sends after the magic (16 bits).</summary>
[Flags]
public enum NbdHandshakeFlags : ushort
{
    /// <summary>No flags.</summary>
    None = 0,

    /// <summary>NBD_FLAG_FIXED_NEWSTYLE.</summary>
    FixedNewstyle = 1 << 0,

    /// <summary>NBD_FLAG_NO_ZEROES.</summary>
    NoZeroes = 1 << 1,
}

/// <summary>Client flags sent in reply to the greeting (32 bits).</summary>
[Flags]
public enum NbdClientFlags : uint
{
    /// <summary>No flags.</summary>
    None = 0,

    /// <summary>NBD_FLAG_C_FIXED_NEWSTYLE.</summary>
    FixedNewstyle = 1 << 0,

    /// <summary>NBD_FLAG_C_NO_ZEROES.</summary>
    NoZeroes = 1 << 1,
}

/// <summary>Options a client sends during negotiation.</summary>
public enum NbdOption : uint
{
    /// <summary>NBD_OPT_EXPORT_NAME: legacy way to enter transmission.</summary>
    ExportName = 1,

    /// <summary>NBD_OPT_ABORT.</summary>
    Abort = 2,

    /// <summary>NBD_OPT_LIST.</summary>
    List = 3,

    /// <summary>NBD_OPT_STARTTLS.</summary>
    StartTls = 5,

    /// <summary>NBD_OPT_INFO.</summary>
    Info = 6,

    /// <summary>NBD_OPT_GO.</summary>
    Go = 7,

    /// <summary>NBD_OPT_STRUCTURED_REPLY.</summary>
    StructuredReply = 8,

    /// <summary>NBD_OPT_LIST_META_CONTEXT.</summary>
    ListMetaContext = 9,

    /// <summary>NBD_OPT_SET_META_CONTEXT.</summary>
    SetMetaContext = 10,

    /// <summary>NBD_OPT_EXTENDED_HEADERS (never requested by Drydock).</summary>
    ExtendedHeaders = 11,
}

/// <summary>Option reply types. Bit 31 marks an error.</summary>
public enum NbdOptionReplyType : uint
{
    /// <summary>NBD_REP_ACK.</summary>
    Ack = 1,

    /// <summary>NBD_REP_SERVER (one export of a LIST).</summary>
    Server = 2,

    /// <summary>NBD_REP_INFO.</summary>
    Info = 3,

    /// <summary>NBD_REP_META_CONTEXT.</summary>
    MetaContext = 4,

    /// <summary>NBD_REP_ERR_UNSUP.</summary>
    ErrUnsupported = 0x8000_0001,

    /// <summary>NBD_REP_ERR_POLICY.</summary>
    ErrPolicy = 0x8000_0002,

    /// <summary>NBD_REP_ERR_INVALID.</summary>
    ErrInvalid = 0x8000_0003,

    /// <summary>NBD_REP_ERR_PLATFORM.</summary>
    ErrPlatform = 0x8000_0004,

    /// <summary>NBD_REP_ERR_TLS_REQD.</summary>
    ErrTlsRequired = 0x8000_0005,

    /// <summary>NBD_REP_ERR_UNKNOWN: no such export.</summary>
    ErrUnknown = 0x8000_0006,

    /// <summary>NBD_REP_ERR_SHUTDOWN.</summary>
    ErrShutdown = 0x8000_0007,

    /// <summary>NBD_REP_ERR_BLOCK_SIZE_REQD.</summary>
    ErrBlockSizeRequired = 0x8000_0008,

    /// <summary>NBD_REP_ERR_TOO_BIG.</summary>
    ErrTooBig = 0x8000_0009,

    /// <summary>NBD_REP_ERR_EXT_HEADER_REQD.</summary>
    ErrExtendedHeaderRequired = 0x8000_000a,
}

/// <summary>Information types in NBD_OPT_INFO / NBD_OPT_GO requests and NBD_REP_INFO replies.</summary>
public enum NbdInfoType : ushort
{
    /// <summary>NBD_INFO_EXPORT: size and transmission flags.</summary>
    Export = 0,

    /// <summary>NBD_INFO_NAME: canonical export name.</summary>
    Name = 1,

    /// <summary>NBD_INFO_DESCRIPTION.</summary>
    Description = 2,

    /// <summary>NBD_INFO_BLOCK_SIZE: minimum, preferred, maximum block size.</summary>
    BlockSize = 3,
}

/// <summary>Transmission flags of an export (16 bits).</summary>
[Flags]
public enum NbdTransmissionFlags : ushort
{
    /// <summary>No flags.</summary>
    None = 0,

    /// <summary>NBD_FLAG_HAS_FLAGS: always set.</summary>
    HasFlags = 1 << 0,

    /// <summary>NBD_FLAG_READ_ONLY.</summary>
    ReadOnly = 1 << 1,

    /// <summary>NBD_FLAG_SEND_FLUSH.</summary>
    SendFlush = 1 << 2,

    /// <summary>NBD_FLAG_SEND_FUA.</summary>
    SendFua = 1 << 3,

    /// <summary>NBD_FLAG_ROTATIONAL.</summary>
    Rotational = 1 << 4,

    /// <summary>NBD_FLAG_SEND_TRIM.</summary>
    SendTrim = 1 << 5,

    /// <summary>NBD_FLAG_SEND_WRITE_ZEROES.</summary>
    SendWriteZeroes = 1 << 6,

    /// <summary>NBD_FLAG_SEND_DF.</summary>
    SendDf = 1 << 7,

    /// <summary>NBD_FLAG_CAN_MULTI_CONN.</summary>
    CanMultiConn = 1 << 8,

    /// <summary>NBD_FLAG_SEND_RESIZE.</summary>
    SendResize = 1 << 9,

    /// <summary>NBD_FLAG_SEND_CACHE.</summary>
    SendCache = 1 << 10,

    /// <summary>NBD_FLAG_SEND_FAST_ZERO.</summary>
    SendFastZero = 1 << 11,

    /// <summary>NBD_FLAG_BLOCK_STAT_PAYLOAD.</summary>
    BlockStatusPayload = 1 << 12,
}

/// <summary>Transmission commands.</summary>
public enum NbdCommand : ushort
{
    /// <summary>NBD_CMD_READ.</summary>
    Read = 0,

    /// <summary>NBD_CMD_WRITE.</summary>
    Write = 1,

    /// <summary>NBD_CMD_DISC: disconnect.</summary>
    Disconnect = 2,

    /// <summary>NBD_CMD_FLUSH.</summary>
    Flush = 3,

    /// <summary>NBD_CMD_TRIM.</summary>
    Trim = 4,

    /// <summary>NBD_CMD_CACHE.</summary>
    Cache = 5,

    /// <summary>NBD_CMD_WRITE_ZEROES.</summary>
    WriteZeroes = 6,

    /// <summary>NBD_CMD_BLOCK_STATUS.</summary>
    BlockStatus = 7,

    /// <summary>NBD_CMD_RESIZE (experimental; never sent).</summary>
    Resize = 8,
}

/// <summary>Command flags (16 bits).</summary>
[Flags]
public enum NbdCommandFlags : ushort
{
    /// <summary>No flags.</summary>
    None = 0,

    /// <summary>NBD_CMD_FLAG_FUA.</summary>
    Fua = 1 << 0,

    /// <summary>NBD_CMD_FLAG_NO_HOLE.</summary>
    NoHole = 1 << 1,

    /// <summary>NBD_CMD_FLAG_DF.</summary>
    DontFragment = 1 << 2,

    /// <summary>NBD_CMD_FLAG_REQ_ONE.</summary>
    RequestOne = 1 << 3,

    /// <summary>NBD_CMD_FLAG_FAST_ZERO.</summary>
    FastZero = 1 << 4,

    /// <summary>NBD_CMD_FLAG_PAYLOAD_LEN (extended headers only; never sent).</summary>
    PayloadLength = 1 << 5,
}

/// <summary>Structured reply chunk flags (16 bits).</summary>
[Flags]
public enum NbdReplyFlags : ushort
{
    /// <summary>No flags.</summary>
    None = 0,

    /// <summary>NBD_REPLY_FLAG_DONE: last chunk of the reply.</summary>
    Done = 1 << 0,
}

/// <summary>Structured reply chunk types. Bit 15 marks an error chunk.</summary>
public enum NbdReplyChunkType : ushort
{
    /// <summary>NBD_REPLY_TYPE_NONE.</summary>
    None = 0,

    /// <summary>NBD_REPLY_TYPE_OFFSET_DATA.</summary>
    OffsetData = 1,

    /// <summary>NBD_REPLY_TYPE_OFFSET_HOLE.</summary>
    OffsetHole = 2,

    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS.</summary>
    BlockStatus = 5,

    /// <summary>NBD_REPLY_TYPE_BLOCK_STATUS_EXT (extended headers only; rejected).</summary>
    BlockStatusExtended = 6,

    /// <summary>NBD_REPLY_TYPE_ERROR.</summary>
    Error = 0x8001,

    /// <summary>NBD_REPLY_TYPE_ERROR_OFFSET.</summary>
    ErrorOffset = 0x8002,
}

/// <summary>Error values carried in replies (they mirror Linux errno values).</summary>
public enum NbdErrorCode : uint
{
    /// <summary>Success.</summary>
    None = 0,

    /// <summary>NBD_EPERM.</summary>
    PermissionDenied = 1,

    /// <summary>NBD_EIO.</summary>
    IOError = 5,

    /// <summary>NBD_ENOMEM.</summary>
    OutOfMemory = 12,

    /// <summary>NBD_EINVAL.</summary>
    InvalidArgument = 22,

    /// <summary>NBD_ENOSPC.</summary>
    NoSpace = 28,

    /// <summary>NBD_EOVERFLOW.</summary>
    Overflow = 75,

    /// <summary>NBD_ENOTSUP.</summary>
    NotSupported = 95,

    /// <summary>NBD_ESHUTDOWN.</summary>
    Shutdown = 108,
}

/// <summary>Flags of the <c>base:allocation</c> context.</summary>
[Flags]
public enum NbdAllocationFlags : uint
{
    /// <summary>Allocated data.</summary>
    Data = 0,

    /// <summary>NBD_STATE_HOLE: not allocated.</summary>
    Hole = 1 << 0,

    /// <summary>NBD_STATE_ZERO: reads as zeroes.</summary>
    Zero = 1 << 1,
}

/// <summary>Well-known metadata context names and flags.</summary>
public static class NbdContexts
{
    /// <summary>The allocation context every server should support.</summary>
    public const string BaseAllocation = "base:allocation";

    /// <summary>Prefix of QEMU's dirty bitmap contexts: <c>qemu:dirty-bitmap:NAME</c>.</summary>
    public const string DirtyBitmapPrefix = "qemu:dirty-bitmap:";

    /// <summary>QEMU's allocation depth context (0 = unallocated, N = backing chain depth).</summary>
    public const string AllocationDepth = "qemu:allocation-depth";

    /// <summary>NBD_STATE_DIRTY: bit 0 of a dirty-bitmap context.</summary>
    public const uint DirtyFlag = 1;

    /// <summary>The context name that carries a QEMU dirty bitmap.</summary>
    /// <param name="bitmap">The bitmap name.</param>
    /// <returns><c>qemu:dirty-bitmap:</c> followed by <paramref name="bitmap"/>.</returns>
    public static string DirtyBitmap(string bitmap) => DirtyBitmapPrefix + bitmap;
}

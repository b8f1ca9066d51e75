namespace Drydock.Nbd.Protocol;

/// <summary>Human-readable names of protocol values, for messages and logs.</summary>
public static class NbdNames
{
    /// <summary>The specification's name of a command.</summary>
    /// <param name="command">The command.</param>
    /// <returns>For example <c>READ</c>.</returns>
    public static string Command(NbdCommand command) => command switch
    {
        NbdCommand.Read => "READ",
        NbdCommand.Write => "WRITE",
        NbdCommand.Disconnect => "DISC",
        NbdCommand.Flush => "FLUSH",
        NbdCommand.Trim => "TRIM",
        NbdCommand.Cache => "CACHE",
        NbdCommand.WriteZeroes => "WRITE_ZEROES",
        NbdCommand.BlockStatus => "BLOCK_STATUS",
        NbdCommand.Resize => "RESIZE",
        _ => $"command {(ushort)command}",
    };

    /// <summary>The specification's name of an option.</summary>
    /// <param name="option">The option.</param>
    /// <returns>For example <c>NBD_OPT_GO</c>.</returns>
    public static string Option(NbdOption option) => option switch
    {
        NbdOption.ExportName => "NBD_OPT_EXPORT_NAME",
        NbdOption.Abort => "NBD_OPT_ABORT",
        NbdOption.List => "NBD_OPT_LIST",
        NbdOption.StartTls => "NBD_OPT_STARTTLS",
        NbdOption.Info => "NBD_OPT_INFO",
        NbdOption.Go => "NBD_OPT_GO",
        NbdOption.StructuredReply => "NBD_OPT_STRUCTURED_REPLY",
        NbdOption.ListMetaContext => "NBD_OPT_LIST_META_CONTEXT",
        NbdOption.SetMetaContext => "NBD_OPT_SET_META_CONTEXT",
        NbdOption.ExtendedHeaders => "NBD_OPT_EXTENDED_HEADERS",
        _ => $"option {(uint)option}",
    };

    /// <summary>The specification's name of an option reply type.</summary>
    /// <param name="type">The reply type.</param>
    /// <returns>For example <c>NBD_REP_ERR_UNKNOWN</c>.</returns>
    public static string OptionReply(NbdOptionReplyType type) => type switch
    {
        NbdOptionReplyType.Ack => "NBD_REP_ACK",
        NbdOptionReplyType.Server => "NBD_REP_SERVER",
        NbdOptionReplyType.Info => "NBD_REP_INFO",
        NbdOptionReplyType.MetaContext => "NBD_REP_META_CONTEXT",
        NbdOptionReplyType.ErrUnsupported => "NBD_REP_ERR_UNSUP",
        NbdOptionReplyType.ErrPolicy => "NBD_REP_ERR_POLICY",
        NbdOptionReplyType.ErrInvalid => "NBD_REP_ERR_INVALID",
        NbdOptionReplyType.ErrPlatform => "NBD_REP_ERR_PLATFORM",
        NbdOptionReplyType.ErrTlsRequired => "NBD_REP_ERR_TLS_REQD",
        NbdOptionReplyType.ErrUnknown => "NBD_REP_ERR_UNKNOWN",
        NbdOptionReplyType.ErrShutdown => "NBD_REP_ERR_SHUTDOWN",
        NbdOptionReplyType.ErrBlockSizeRequired => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        NbdOptionReplyType.ErrTooBig => "NBD_REP_ERR_TOO_BIG",
        NbdOptionReplyType.ErrExtendedHeaderRequired => "NBD_REP_ERR_EXT_HEADER_REQD",
        _ => $"reply type 0x{(uint)type:x8}",
    };

    /// <summary>The errno-style name of an error code.</summary>
    /// <param name="error">The error.</param>
    /// <returns>For example <c>EIO (input/output error)</c>.</returns>
    public static string Error(NbdErrorCode error) => error switch
    {
        NbdErrorCode.None => "no error",
        NbdErrorCode.PermissionDenied => "EPERM (operation not permitted)",
        NbdErrorCode.IOError => "EIO (input/output error)",
        NbdErrorCode.OutOfMemory => "ENOMEM (out of memory)",
        NbdErrorCode.InvalidArgument => "EINVAL (invalid argument)",
        NbdErrorCode.NoSpace => "ENOSPC (no space left on device)",
        NbdErrorCode.Overflow => "EOVERFLOW (value too large)",
        NbdErrorCode.NotSupported => "ENOTSUP (operation not supported)",
        NbdErrorCode.Shutdown => "ESHUTDOWN (server shutting down)",
        _ => $"error {(uint)error}",
    };

    /// <summary>The specification's name of a structured reply chunk type.</summary>
    /// <param name="type">The chunk type.</param>
    /// <returns>For example <c>NBD_REPLY_TYPE_OFFSET_DATA</c>.</returns>
    public static string Chunk(NbdReplyChunkType type) => type switch
    {
        NbdReplyChunkType.None => "NBD_REPLY_TYPE_NONE",
        NbdReplyChunkType.OffsetData => "NBD_REPLY_TYPE_OFFSET_DATA",
        NbdReplyChunkType.OffsetHole => "NBD_REPLY_TYPE_OFFSET_HOLE",
        NbdReplyChunkType.BlockStatus => "NBD_REPLY_TYPE_BLOCK_STATUS",
        NbdReplyChunkType.BlockStatusExtended => "NBD_REPLY_TYPE_BLOCK_STATUS_EXT",
        NbdReplyChunkType.Error => "NBD_REPLY_TYPE_ERROR",
        NbdReplyChunkType.ErrorOffset => "NBD_REPLY_TYPE_ERROR_OFFSET",
        _ => $"chunk type 0x{(ushort)type:x4}",
    };
}

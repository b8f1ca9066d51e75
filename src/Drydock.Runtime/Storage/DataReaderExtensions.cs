using System.Data.Common;

namespace Drydock.Runtime.Storage;

/// <summary>Null-aware column reads for the stores.</summary>
internal static class DataReaderExtensions
{
    // The stores read rows in the default (non-sequential) access mode: the whole row is in memory once
    // ReadAsync returned, so these checks never block on IO. One justified suppression here instead of at
    // every column.
#pragma warning disable CA1849
    public static string? GetStringOrNull(this DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    public static long? GetInt64OrNull(this DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetInt64(ordinal);

    public static DateTimeOffset? GetDateTimeOffsetOrNull(this DbDataReader reader, int ordinal)
        => reader.IsDBNull(ordinal) ? null : reader.GetFieldValue<DateTimeOffset>(ordinal);

    public static DateTimeOffset GetDateTimeOffset(this DbDataReader reader, int ordinal) => reader.GetFieldValue<DateTimeOffset>(ordinal);
#pragma warning restore CA1849
}

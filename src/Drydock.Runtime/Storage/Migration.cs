namespace Drydock.Runtime.Storage;

/// <summary>One step of a provider's schema: applied once, in version order, recorded in <c>runtime_schema</c>.</summary>
/// <param name="Version">The version this step brings the schema to (1, 2, ...).</param>
/// <param name="Description">What it does, recorded with it.</param>
/// <param name="Sql">The statements.</param>
public sealed record Migration(int Version, string Description, string Sql);

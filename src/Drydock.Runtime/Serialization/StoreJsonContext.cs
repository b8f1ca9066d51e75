using System.Text.Json.Serialization;

namespace Drydock.Runtime.Serialization;

/// <summary>Source-generated JSON for the stores' own parameters.</summary>
[JsonSerializable(typeof(string[]))]
internal sealed partial class StoreJsonContext : JsonSerializerContext;
